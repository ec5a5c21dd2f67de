// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title PlainCommitBaseline
/// @notice Gas baseline for benchmarks only: the naive design that stores each commitment hash in
///         a fresh slot of a storage mapping (no selection, budget or role checks). Not used by the framework.
contract PlainCommitBaseline {
    mapping(uint256 => mapping(address => bytes32)) public entries;

    error AlreadyCommitted(uint256 round, address client);

    event Committed(
        uint256 indexed round,
        address indexed client,
        bytes32 blobDigest,
        bytes32 eventDigest,
        uint64 epsilon
    );

    function commit(uint256 round, bytes32 blobDigest, bytes32 eventDigest, uint64 epsilon)
        external
    {
        if (entries[round][msg.sender] != bytes32(0)) revert AlreadyCommitted(round, msg.sender);
        entries[round][msg.sender] = keccak256(abi.encode(blobDigest, eventDigest, epsilon));
        emit Committed(round, msg.sender, blobDigest, eventDigest, epsilon);
    }
}
