// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ConsortiumLedger
/// @notice Audit trail of a federated-learning consortium: roles, rounds, digest commitments,
///         a per-client epsilon budget and subjective-logic reputation (Kang et al. 2019).
/// @dev Only 32-byte digests (keccak256) ever reach this contract: no data, no keys.
///      Trust: the admin assigns roles; the aggregator opens, publishes and finalizes rounds;
///      the key holder attests what it revealed; auditors flag clients. Every write checks
///      the caller's role. Deadlines are block numbers (inclusive). Epsilon is fixed point in
///      micro-epsilon (1e-6), rounded up by the off-chain client so the check is never laxer.
///
///      Two commit modes, chosen per round at opening (one mode per round, so a client cannot
///      commit twice through two paths):
///      - direct: each selected client sends its own transaction. The round stores one slot per
///        selected client, holding SELECTED before the commit and keccak256(blobDigest,
///        eventDigest, epsilon) after it, so an auditor reads every commitment from state.
///      - batched: the aggregator submits EIP-712 signatures of many clients in one
///        transaction. Who committed is a bitmap over indices into the (sorted) selected list,
///        and the round keeps a running accumulator
///        acc' = keccak256(acc, client, blobDigest, eventDigest, epsilon) that the auditor
///        recomputes from the Committed events.
contract ConsortiumLedger {
    // ----------------------------------------------------------------------------- roles
    uint8 public constant ROLE_CLIENT = 1;
    uint8 public constant ROLE_AGGREGATOR = 2;
    uint8 public constant ROLE_KEY_HOLDER = 4;
    uint8 public constant ROLE_AUDITOR = 8;
    uint8 internal constant ALL_ROLES = 15;

    // --------------------------------------------------------------------- round status
    uint8 public constant STATUS_NONE = 0;
    uint8 public constant STATUS_OPEN = 1;
    uint8 public constant STATUS_AGGREGATED = 2;
    uint8 public constant STATUS_REVEALED = 3;
    uint8 public constant STATUS_FINALIZED = 4;

    /// @notice Fixed-point scale of epsilon values (micro-epsilon) and of reputation scores.
    uint256 public constant FIXED_POINT = 1_000_000;
    /// @notice Subjective logic parameters: score = (wP*p + a*W) / (wP*p + wN*n + W).
    uint256 public constant POSITIVE_WEIGHT = 1;
    uint256 public constant NEGATIVE_WEIGHT = 2;
    uint256 public constant PRIOR_WEIGHT = 2;
    uint256 public constant BASE_RATE = 500_000; // a = 0.5 in FIXED_POINT

    uint256 public constant MAX_CLIENTS = 4096;
    uint256 internal constant SELECTED = 1;
    uint256 internal constant BITS_PER_WORD = 255; // bit 255 is a sentinel: words never zero
    uint256 internal constant SENTINEL = 1 << 255;
    uint256 internal constant HALF_ORDER =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    bytes32 public constant COMMIT_TYPEHASH = keccak256(
        "Commit(uint256 round,address client,bytes32 blobDigest,bytes32 eventDigest,uint64 epsilon)"
    );
    bytes32 internal constant DOMAIN_TYPEHASH = keccak256(
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    );
    bytes32 internal constant NAME_HASH = keccak256("SecAggConsortiumLedger");
    bytes32 internal constant VERSION_HASH = keccak256("1");

    struct Member {
        uint8 roles;
        uint32 positive;
        uint32 negative;
    }

    /// @dev Packed into one slot so a direct commit reads the whole header once.
    struct Header {
        uint64 deadline;
        uint64 epsilonBudget;
        uint16 numClients;
        uint8 status;
        bool batched;
    }

    struct Round {
        Header header;
        bytes32 configDigest;
        bytes32 clientsHash;
        bytes32 accumulator;
        bytes32 aggregateDigest;
        bytes32 participantsHash;
        bytes32 revealDigest;
        uint16 committed;
        uint16 missed;
    }

    /// @dev `meta` packs index (bits 0-15, into the selected list), epsilon (bits 16-79)
    ///      and the signature's v (bits 80-87); higher bits must be zero. Packing saves
    ///      calldata: five words per client.
    struct SignedCommit {
        bytes32 blobDigest;
        bytes32 eventDigest;
        bytes32 r;
        bytes32 s;
        uint256 meta;
    }

    address public immutable admin;
    uint256 internal immutable deployChainId;
    bytes32 internal immutable cachedDomainSeparator;

    /// @notice Per-client cumulative epsilon budget (micro-epsilon), snapshot into each round.
    uint64 public epsilonBudget;

    mapping(address => Member) internal members;
    mapping(uint256 => Round) internal rounds;
    /// @dev direct rounds: 0 = not selected, SELECTED = not yet committed, else commitment hash.
    mapping(uint256 => mapping(address => uint256)) internal commitmentOf;
    /// @dev batched rounds: committed bitmap words (255 clients per word, bit 255 sentinel).
    mapping(uint256 => mapping(uint256 => uint256)) internal committedBits;
    mapping(bytes32 => bool) internal flagged;

    // ----------------------------------------------------------------------------- events
    event RolesSet(address indexed account, uint8 roles);
    event EpsilonBudgetSet(uint64 epsilonBudget);
    event RoundOpened(
        uint256 indexed round,
        bytes32 configDigest,
        uint64 deadline,
        uint64 epsilonBudget,
        bool batched,
        address[] clients
    );
    event Committed(
        uint256 indexed round,
        address indexed client,
        bytes32 blobDigest,
        bytes32 eventDigest,
        uint64 epsilon
    );
    /// @notice One event per batch (cheaper than one per client); entry i of every array
    ///         describes the i-th commitment of the batch.
    event BatchCommitted(
        uint256 indexed round,
        address[] clients,
        bytes32[] blobDigests,
        bytes32[] eventDigests,
        uint64[] epsilons
    );
    event AggregatePublished(uint256 indexed round, bytes32 aggregateDigest, address[] participants);
    event RevealAttested(uint256 indexed round, bytes32 revealDigest);
    event RoundFinalized(uint256 indexed round, uint16 committed, uint16 missed);
    event Flagged(address indexed client, uint256 indexed round, uint32 reasonCode, address auditor);

    // ----------------------------------------------------------------------------- errors
    error NotAdmin(address sender);
    error NotRegistered(address account, uint8 role);
    error InvalidRoles(uint8 roles);
    error ZeroAddress();
    error RoundExists(uint256 round);
    error WrongRound(uint256 round, uint8 status);
    error WrongMode(uint256 round, bool batched);
    error BadClientList(uint256 round);
    error ClientsNotSorted(uint256 position);
    error DeadlineInPast(uint64 deadline, uint256 blockNumber);
    error DeadlinePassed(uint256 round, uint64 deadline, uint256 blockNumber);
    error NotSelected(uint256 round, address client);
    error AlreadyCommitted(uint256 round, address client);
    error NotCommitted(uint256 round, address client);
    error BudgetExceeded(address client, uint64 claimed, uint64 budget);
    error BadIndex(uint256 position, uint256 index);
    error MalformedCommit(uint256 position);
    error HighS(uint256 position);
    error InvalidSignature(uint256 position);
    error AlreadyFlagged(address client, uint256 round, uint32 reasonCode);

    constructor(uint64 initialEpsilonBudget) {
        admin = msg.sender;
        deployChainId = block.chainid;
        cachedDomainSeparator = _buildDomainSeparator();
        epsilonBudget = initialEpsilonBudget;
        emit EpsilonBudgetSet(initialEpsilonBudget);
    }

    modifier onlyAdmin() {
        if (msg.sender != admin) revert NotAdmin(msg.sender);
        _;
    }

    modifier onlyRole(uint8 role) {
        if (members[msg.sender].roles & role == 0) revert NotRegistered(msg.sender, role);
        _;
    }

    // ------------------------------------------------------------------------ registry
    /// @notice Set the role bits of many accounts (0 revokes every role).
    function setRoles(address[] calldata accounts, uint8 roles) external onlyAdmin {
        if (roles & ~ALL_ROLES != 0) revert InvalidRoles(roles);
        for (uint256 i = 0; i < accounts.length; ++i) {
            address account = accounts[i];
            if (account == address(0)) revert ZeroAddress();
            members[account].roles = roles;
            emit RolesSet(account, roles);
        }
    }

    function setEpsilonBudget(uint64 newBudget) external onlyAdmin {
        epsilonBudget = newBudget;
        emit EpsilonBudgetSet(newBudget);
    }

    // -------------------------------------------------------------------------- rounds
    /// @notice Open a round. `clients` must be strictly ascending registered clients; the
    ///         epsilon budget in force now applies to the whole round.
    function openRound(
        uint256 round,
        bytes32 configDigest,
        address[] calldata clients,
        uint64 deadline,
        bool batched
    ) external onlyRole(ROLE_AGGREGATOR) {
        Round storage rd = rounds[round];
        if (rd.header.status != STATUS_NONE) revert RoundExists(round);
        uint256 n = clients.length;
        if (n == 0 || n > MAX_CLIENTS) revert BadClientList(round);
        if (deadline < block.number) revert DeadlineInPast(deadline, block.number);
        address previous = address(0);
        for (uint256 i = 0; i < n; ++i) {
            address client = clients[i];
            if (client <= previous) revert ClientsNotSorted(i);
            previous = client;
            if (members[client].roles & ROLE_CLIENT == 0) revert NotRegistered(client, ROLE_CLIENT);
            if (!batched) commitmentOf[round][client] = SELECTED;
        }
        uint64 budget = epsilonBudget;
        rd.header = Header(deadline, budget, uint16(n), STATUS_OPEN, batched);
        rd.configDigest = configDigest;
        rd.clientsHash = keccak256(abi.encodePacked(clients));
        if (batched) {
            for (uint256 w = 0; w <= (n - 1) / BITS_PER_WORD; ++w) {
                committedBits[round][w] = SENTINEL;
            }
            rd.accumulator = keccak256(abi.encode(_domainSeparator(), round, configDigest));
        }
        emit RoundOpened(round, configDigest, deadline, budget, batched, clients);
    }

    /// @notice A selected client commits to its protected update (direct rounds).
    function commit(uint256 round, bytes32 blobDigest, bytes32 eventDigest, uint64 epsilon)
        external
    {
        Header memory h = rounds[round].header;
        if (h.status != STATUS_OPEN) revert WrongRound(round, h.status);
        if (h.batched) revert WrongMode(round, true);
        if (block.number > h.deadline) revert DeadlinePassed(round, h.deadline, block.number);
        if (epsilon > h.epsilonBudget) revert BudgetExceeded(msg.sender, epsilon, h.epsilonBudget);
        uint256 current = commitmentOf[round][msg.sender];
        if (current != SELECTED) {
            if (current != 0) revert AlreadyCommitted(round, msg.sender);
            if (members[msg.sender].roles & ROLE_CLIENT == 0) {
                revert NotRegistered(msg.sender, ROLE_CLIENT);
            }
            revert NotSelected(round, msg.sender);
        }
        commitmentOf[round][msg.sender] =
            uint256(keccak256(abi.encode(blobDigest, eventDigest, epsilon)));
        emit Committed(round, msg.sender, blobDigest, eventDigest, epsilon);
    }

    /// @notice The aggregator submits clients' EIP-712 signed commitments (batched rounds).
    /// @param clients the round's full selected list (checked against the stored hash).
    function commitBatch(
        uint256 round,
        address[] calldata clients,
        SignedCommit[] calldata commits
    ) external onlyRole(ROLE_AGGREGATOR) {
        uint64 budget = _openBatchedRound(round, clients);
        uint256 count = commits.length;
        address[] memory committers = new address[](count);
        bytes32[] memory blobDigests = new bytes32[](count);
        bytes32[] memory eventDigests = new bytes32[](count);
        uint64[] memory epsilons = new uint64[](count);
        bytes32 acc = rounds[round].accumulator;
        uint256 wordIndex = type(uint256).max;
        uint256 bits = 0;
        for (uint256 i = 0; i < count; ++i) {
            SignedCommit calldata c = commits[i];
            bytes32 blobDigest = c.blobDigest;
            bytes32 eventDigest = c.eventDigest;
            (address client, uint256 index, uint64 epsilon) =
                _verifiedSigner(i, round, clients, c, budget);
            uint256 w = index / BITS_PER_WORD;
            if (w != wordIndex) {
                if (wordIndex != type(uint256).max) committedBits[round][wordIndex] = bits;
                wordIndex = w;
                bits = committedBits[round][w];
            }
            uint256 mask = 1 << (index % BITS_PER_WORD);
            if (bits & mask != 0) revert AlreadyCommitted(round, client);
            bits |= mask;
            acc = _chain(acc, client, blobDigest, eventDigest, epsilon);
            committers[i] = client;
            blobDigests[i] = blobDigest;
            eventDigests[i] = eventDigest;
            epsilons[i] = epsilon;
        }
        if (wordIndex != type(uint256).max) committedBits[round][wordIndex] = bits;
        rounds[round].accumulator = acc;
        emit BatchCommitted(round, committers, blobDigests, eventDigests, epsilons);
    }

    /// @notice The aggregator publishes the aggregate's digest and who is in it; this closes
    ///         the round to further commits. Every participant must have committed in this
    ///         round (strictly ascending, so no one is counted twice).
    /// @param clients the round's full selected list (checked against the stored hash).
    function publishAggregate(
        uint256 round,
        bytes32 aggregateDigest,
        address[] calldata clients,
        address[] calldata participants
    ) external onlyRole(ROLE_AGGREGATOR) {
        Round storage rd = rounds[round];
        Header memory h = rd.header;
        if (h.status != STATUS_OPEN) revert WrongRound(round, h.status);
        if (keccak256(abi.encodePacked(clients)) != rd.clientsHash) revert BadClientList(round);
        _checkParticipants(round, h.batched, clients, participants);
        rd.header.status = STATUS_AGGREGATED;
        rd.aggregateDigest = aggregateDigest;
        rd.participantsHash = keccak256(abi.encodePacked(participants));
        emit AggregatePublished(round, aggregateDigest, participants);
    }

    /// @notice The key holder attests the digest of what it revealed.
    function attestReveal(uint256 round, bytes32 revealDigest) external onlyRole(ROLE_KEY_HOLDER) {
        Round storage rd = rounds[round];
        if (rd.header.status != STATUS_AGGREGATED) revert WrongRound(round, rd.header.status);
        rd.header.status = STATUS_REVEALED;
        rd.revealDigest = revealDigest;
        emit RevealAttested(round, revealDigest);
    }

    /// @notice Finalize: every selected client gets a positive event if it committed in
    ///         time, a negative one otherwise. `clients` is the round's selected list.
    function finalize(uint256 round, address[] calldata clients) external onlyRole(ROLE_AGGREGATOR) {
        Round storage rd = rounds[round];
        Header memory h = rd.header;
        if (h.status != STATUS_AGGREGATED && h.status != STATUS_REVEALED) {
            revert WrongRound(round, h.status);
        }
        if (keccak256(abi.encodePacked(clients)) != rd.clientsHash) revert BadClientList(round);
        uint16 committedCount = 0;
        uint256 wordIndex = type(uint256).max;
        uint256 bits = 0;
        for (uint256 i = 0; i < clients.length; ++i) {
            address client = clients[i];
            bool done;
            if (h.batched) {
                uint256 w = i / BITS_PER_WORD;
                if (w != wordIndex) {
                    wordIndex = w;
                    bits = committedBits[round][w];
                }
                done = bits & (1 << (i % BITS_PER_WORD)) != 0;
            } else {
                done = commitmentOf[round][client] > SELECTED;
            }
            Member storage m = members[client];
            if (done) {
                ++committedCount;
                m.positive += 1;
            } else {
                m.negative += 1;
            }
        }
        uint16 missedCount = uint16(clients.length) - committedCount;
        rd.header.status = STATUS_FINALIZED;
        rd.committed = committedCount;
        rd.missed = missedCount;
        emit RoundFinalized(round, committedCount, missedCount);
    }

    /// @notice An auditor flags a client (negative reputation event) with a reason code.
    function flag(address client, uint256 round, uint32 reasonCode) external onlyRole(ROLE_AUDITOR) {
        if (members[client].roles & ROLE_CLIENT == 0) revert NotRegistered(client, ROLE_CLIENT);
        uint8 status = rounds[round].header.status;
        if (status == STATUS_NONE) revert WrongRound(round, status);
        bytes32 key = keccak256(abi.encode(client, round, reasonCode));
        if (flagged[key]) revert AlreadyFlagged(client, round, reasonCode);
        flagged[key] = true;
        members[client].negative += 1;
        emit Flagged(client, round, reasonCode, msg.sender);
    }

    // --------------------------------------------------------------------------- views
    function rolesOf(address account) external view returns (uint8) {
        return members[account].roles;
    }

    /// @return positive, negative, score (FIXED_POINT scale)
    function reputation(address account) external view returns (uint32, uint32, uint256) {
        Member memory m = members[account];
        return (m.positive, m.negative, _score(m.positive, m.negative));
    }

    function reputationScore(address account) external view returns (uint256) {
        Member memory m = members[account];
        return _score(m.positive, m.negative);
    }

    function roundHeader(uint256 round)
        external
        view
        returns (uint64 deadline, uint64 budget, uint16 numClients, uint8 status, bool batched)
    {
        Header memory h = rounds[round].header;
        return (h.deadline, h.epsilonBudget, h.numClients, h.status, h.batched);
    }

    function roundDigests(uint256 round)
        external
        view
        returns (
            bytes32 configDigest,
            bytes32 clientsHash,
            bytes32 accumulator,
            bytes32 aggregateDigest,
            bytes32 participantsHash,
            bytes32 revealDigest,
            uint16 committed,
            uint16 missed
        )
    {
        Round storage rd = rounds[round];
        return (
            rd.configDigest,
            rd.clientsHash,
            rd.accumulator,
            rd.aggregateDigest,
            rd.participantsHash,
            rd.revealDigest,
            rd.committed,
            rd.missed
        );
    }

    /// @notice Direct rounds: 0 = not selected, 1 = selected and not committed, otherwise
    ///         keccak256(abi.encode(blobDigest, eventDigest, epsilon)).
    function commitment(uint256 round, address client) external view returns (bytes32) {
        return bytes32(commitmentOf[round][client]);
    }

    /// @notice Batched rounds: whether the client at `index` of the selected list committed.
    function hasCommittedIndex(uint256 round, uint256 index) external view returns (bool) {
        return committedBits[round][index / BITS_PER_WORD] & (1 << (index % BITS_PER_WORD)) != 0;
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparator();
    }

    // ------------------------------------------------------------------------ internal
    /// @dev Checks a batched round accepts commits now and `clients` is its selection.
    function _openBatchedRound(uint256 round, address[] calldata clients)
        internal
        view
        returns (uint64)
    {
        Round storage rd = rounds[round];
        Header memory h = rd.header;
        if (h.status != STATUS_OPEN) revert WrongRound(round, h.status);
        if (!h.batched) revert WrongMode(round, false);
        if (block.number > h.deadline) revert DeadlinePassed(round, h.deadline, block.number);
        if (keccak256(abi.encodePacked(clients)) != rd.clientsHash) revert BadClientList(round);
        return h.epsilonBudget;
    }

    /// @dev Unpacks and checks (index, budget, low-s, EIP-712 signature) the commit at
    ///      position i; returns the selected client that signed it.
    function _verifiedSigner(
        uint256 i,
        uint256 round,
        address[] calldata clients,
        SignedCommit calldata c,
        uint64 budget
    ) internal view returns (address client, uint256 index, uint64 epsilon) {
        uint256 meta = c.meta;
        if (meta >> 88 != 0) revert MalformedCommit(i);
        index = meta & 0xFFFF;
        epsilon = uint64(meta >> 16);
        if (index >= clients.length) revert BadIndex(i, index);
        client = clients[index];
        if (epsilon > budget) revert BudgetExceeded(client, epsilon, budget);
        bytes32 sigS = c.s;
        if (uint256(sigS) > HALF_ORDER) revert HighS(i);
        address signer =
            _recover(round, client, c.blobDigest, c.eventDigest, epsilon, meta >> 80, c.r, sigS);
        if (signer == address(0) || signer != client) revert InvalidSignature(i);
    }

    /// @dev Participants are strictly ascending and each committed in `round` (direct: its
    ///      slot holds a commitment; batched: its bit is set, found by a merge walk of the
    ///      two sorted lists).
    function _checkParticipants(
        uint256 round,
        bool batched,
        address[] calldata clients,
        address[] calldata participants
    ) internal view {
        address previous = address(0);
        uint256 j = 0;
        for (uint256 i = 0; i < participants.length; ++i) {
            address p = participants[i];
            if (p <= previous) revert ClientsNotSorted(i);
            previous = p;
            if (!batched) {
                if (commitmentOf[round][p] <= SELECTED) revert NotCommitted(round, p);
                continue;
            }
            while (j < clients.length && clients[j] < p) ++j;
            if (j == clients.length || clients[j] != p) revert NotCommitted(round, p);
            uint256 bits = committedBits[round][j / BITS_PER_WORD];
            if (bits & (1 << (j % BITS_PER_WORD)) == 0) revert NotCommitted(round, p);
        }
    }

    /// @dev EIP-712 digest of Commit(round, client, blob, event, epsilon) and ecrecover, in
    ///      scratch memory past the free pointer (nothing allocated per client).
    function _recover(
        uint256 round,
        address client,
        bytes32 blobDigest,
        bytes32 eventDigest,
        uint64 epsilon,
        uint256 v,
        bytes32 r,
        bytes32 sigS
    ) internal view returns (address signer) {
        bytes32 domain = _domainSeparator();
        bytes32 typeHash = COMMIT_TYPEHASH;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            mstore(add(ptr, 0x20), round)
            mstore(add(ptr, 0x40), client)
            mstore(add(ptr, 0x60), blobDigest)
            mstore(add(ptr, 0x80), eventDigest)
            mstore(add(ptr, 0xa0), epsilon)
            let structHash := keccak256(ptr, 0xc0)
            mstore(ptr, shl(240, 0x1901))
            mstore(add(ptr, 0x02), domain)
            mstore(add(ptr, 0x22), structHash)
            let digest := keccak256(ptr, 0x42)
            mstore(ptr, digest)
            mstore(add(ptr, 0x20), v)
            mstore(add(ptr, 0x40), r)
            mstore(add(ptr, 0x60), sigS)
            mstore(0x00, 0)
            if iszero(staticcall(gas(), 0x01, ptr, 0x80, 0x00, 0x20)) { revert(0, 0) }
            signer := mload(0x00)
        }
    }

    /// @dev acc' = keccak256(abi.encode(acc, client, blobDigest, eventDigest, epsilon)).
    function _chain(
        bytes32 acc,
        address client,
        bytes32 blobDigest,
        bytes32 eventDigest,
        uint64 epsilon
    ) internal pure returns (bytes32 next) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, acc)
            mstore(add(ptr, 0x20), client)
            mstore(add(ptr, 0x40), blobDigest)
            mstore(add(ptr, 0x60), eventDigest)
            mstore(add(ptr, 0x80), epsilon)
            next := keccak256(ptr, 0xa0)
        }
    }

    function _score(uint256 p, uint256 n) internal pure returns (uint256) {
        uint256 num = POSITIVE_WEIGHT * p * FIXED_POINT + BASE_RATE * PRIOR_WEIGHT;
        uint256 den = POSITIVE_WEIGHT * p + NEGATIVE_WEIGHT * n + PRIOR_WEIGHT;
        return num / den;
    }

    function _domainSeparator() internal view returns (bytes32) {
        if (block.chainid == deployChainId) return cachedDomainSeparator;
        return _buildDomainSeparator();
    }

    function _buildDomainSeparator() internal view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this))
        );
    }
}
