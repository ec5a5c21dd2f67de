// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ConsortiumLedger
/// @notice Audit trail of a federated-learning consortium: roles, rounds, digest commitments,
///         a per-client epsilon budget and subjective-logic reputation (Kang et al. 2019).
/// @dev Only 32-byte digests (keccak256) ever reach this contract: no data, no keys.
///      Gas: `commit` is the hottest entry point and the dispatcher compares selectors in
///      ascending order, so the merkle entry points are named to sort after it (and after
///      `reveal`): each selector sorted before costs every commit 22 gas.
///      Trust: the admin assigns roles; the aggregator opens, publishes and finalizes rounds;
///      the key holder reserves, attests or refuses the one release of a round; auditors flag
///      clients. Every write checks the caller's role. Deadlines are block numbers
///      (inclusive). Epsilon is fixed point in micro-epsilon (1e-6), rounded up by the
///      off-chain client so the check is never laxer.
///
///      Commit, then reveal. A round has two phases the contract enforces:
///      - commit phase (until `deadline`, or until every selected client committed): clients
///        put only digests here, binding the round's manifest digest (a commit that names
///        another manifest reverts), and keep their blobs private. Nobody can copy or cancel
///        a blob it cannot read, and after this phase nobody can commit any more.
///      - reveal phase (until `revealDeadline`): blobs go to the artifact store. A direct-mode
///        client records its reveal with one `reveal(round)` transaction (one slot bit, the
///        only extra transaction of the commit/reveal split). In batched rounds the
///        aggregator's `publishAggregate` marks its participants revealed in the same
///        transaction (no extra transaction); a client it left out can call `revealOwn`
///        itself, and the auditor checks every blob against its commitment afterwards.
///      The aggregate can be published only once the commit phase is closed, and before the
///      reveal deadline only if it includes every committed client, so an aggregator cannot
///      close a round early or cut a committed client out without waiting for the deadline.
///      A client counts as done (positive event at `finalize`) if it committed AND revealed;
///      one that commits and never reveals is a dropout (negative event).
///
///      Release: the key holder reserves the release (`reserveRelease`) before decrypting,
///      and then attests what it released or why it refused: at most one release per round.
///
///      Three commit modes, chosen per round at opening:
///      - direct: each selected client sends its own transaction. The round stores one slot per
///        selected client: SELECTED before the commit, then the commitment word
///        keccak256(blobDigest, eventDigest, epsilon) with its two low bits replaced by the
///        COMMITTED (bit 1) and REVEALED (bit 0) flags, so an auditor reads it from state.
///      - batched: the aggregator submits EIP-712 signatures of many clients in one
///        transaction; a client the aggregator leaves out commits with `commitOwn`. Who
///        committed and who revealed are bitmaps over indices into the (sorted) selected list,
///        and the round keeps a running accumulator
///        acc' = keccak256(acc, client, blobDigest, eventDigest, epsilon) that the auditor
///        recomputes from the Committed and BatchCommitted events.
///      - merkle (optimistic): clients sign their leaves off chain (before the round is on
///        chain: the round id and manifest digest come with the manifest); the aggregator
///        opens the round WITH the root of the leaves it accepted (`openRoundWithRoot`,
///        which also closes the commit phase) and publishes once (`publishMerkleRound`,
///        or, in a key holder's round, the key holder sends the aggregator's signed
///        publication with its reservation: `reserveAndPublish`). The round stores ONE
///        word: its mode and status bytes (where the header keeps them) and 240 bits of a
///        hash chain of everything committed (`MerkleState`); nothing per client, the
///        selected list only in the opening calldata, the release attestation only in
///        events. Nothing is checked per commit: within the challenge window (from the
///        opening until block revealDeadline + challengeWindow) anyone proves an omission
///        (aggregator at fault), an over-budget leaf or an equivocation (client at fault);
///        a false challenge reverts. Reputation is settled once after the window, for
///        several rounds with the same selected list at once (`finalizeOptimisticRoundBatch`).
contract ConsortiumLedger {
    // ----------------------------------------------------------------------------- roles
    uint8 public constant ROLE_CLIENT = 1;
    uint8 public constant ROLE_AGGREGATOR = 2;
    uint8 public constant ROLE_KEY_HOLDER = 4;
    uint8 public constant ROLE_AUDITOR = 8;
    /// @notice A member of the decryption committee (threshold CKKS: any T of K release).
    uint8 public constant ROLE_COMMITTEE = 16;
    uint8 internal constant ALL_ROLES = 31;
    uint256 public constant MAX_COMMITTEE = 8;

    // --------------------------------------------------------------------- round status
    uint8 public constant STATUS_NONE = 0;
    uint8 public constant STATUS_OPEN = 1;
    uint8 public constant STATUS_AGGREGATED = 2;
    uint8 public constant STATUS_RELEASING = 3;
    uint8 public constant STATUS_REVEALED = 4;
    uint8 public constant STATUS_REFUSED = 5;
    uint8 public constant STATUS_FINALIZED = 6;

    /// @notice Fixed-point scale of epsilon values (micro-epsilon) and of reputation scores.
    uint256 public constant FIXED_POINT = 1_000_000;
    /// @notice Subjective logic parameters: score = (wP*p + a*W) / (wP*p + wN*n + W).
    uint256 public constant POSITIVE_WEIGHT = 1;
    uint256 public constant NEGATIVE_WEIGHT = 2;
    uint256 public constant PRIOR_WEIGHT = 2;
    uint256 public constant BASE_RATE = 500_000; // a = 0.5 in FIXED_POINT

    uint256 public constant MAX_CLIENTS = 4096;

    // ----------------------------------------------------------------- commit modes
    uint8 internal constant MODE_DIRECT = 0;
    uint8 internal constant MODE_BATCHED = 1;
    uint8 internal constant MODE_MERKLE = 2;

    /// @dev Reason codes of upheld challenges (merkle rounds; `ChallengeUpheld` events).
    uint32 internal constant REASON_OMISSION = 101;
    uint32 internal constant REASON_OVER_BUDGET = 102;
    uint32 internal constant REASON_EQUIVOCATION = 103;
    /// @dev merkleFlags bits per (round, client): what a challenge proved.
    uint8 internal constant OMISSION_PROVEN = 1;
    uint8 internal constant OVER_BUDGET_PROVEN = 2;
    uint8 internal constant EQUIVOCATION_PROVEN = 4;
    uint256 internal constant SELECTED = 1;
    uint256 internal constant REVEALED_FLAG = 1;
    uint256 internal constant COMMITTED_FLAG = 2;
    uint256 internal constant FLAGS = 3;
    uint256 internal constant BITS_PER_WORD = 255; // bit 255 is a sentinel: words never zero
    uint256 internal constant SENTINEL = 1 << 255;
    /// @dev Merkle rounds: the low 240 bits of the header word hold the state key.
    uint256 internal constant KEY_MASK = (1 << 240) - 1;
    uint256 internal constant HALF_ORDER =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    bytes32 public constant COMMIT_TYPEHASH = keccak256(
        "Commit(uint256 round,address client,bytes32 manifestDigest,bytes32 blobDigest,bytes32 eventDigest,uint64 epsilon)"
    );
    /// @dev The aggregator's signed publication of a merkle round (`reserveAndPublish`).
    bytes32 internal constant PUBLISH_TYPEHASH =
        keccak256("Publish(uint256 round,bytes32 aggregateDigest,bytes32 participantsHash)");
    bytes32 internal constant DOMAIN_TYPEHASH = keccak256(
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    );
    bytes32 internal constant NAME_HASH = keccak256("SecAggConsortiumLedger");
    bytes32 internal constant VERSION_HASH = keccak256("2");

    struct Member {
        uint8 roles;
        uint32 positive;
        uint32 negative;
    }

    /// @dev Packed into one slot (256 bits) so a commit reads and updates the header once.
    struct Header {
        uint64 deadline;
        uint64 revealDeadline;
        uint64 epsilonBudget;
        uint16 numClients;
        uint16 committed;
        uint16 revealed;
        uint8 status;
        uint8 mode;
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
        uint32 refusalCode;
    }

    /// @dev `meta` packs index (bits 0-15, into the selected list), epsilon (bits 16-79)
    ///      and the signature's v (bits 80-87); higher bits must be zero. Packing saves
    ///      calldata: five words per client. The signed manifest digest is not sent: it must
    ///      be the round's config digest, which the contract reads itself.
    struct SignedCommit {
        bytes32 blobDigest;
        bytes32 eventDigest;
        bytes32 r;
        bytes32 s;
        uint256 meta;
    }

    /// @notice Everything a merkle round has committed, header included. Only a hash chain
    ///         of it is stored, in the low 240 bits of the round's header word (mode and
    ///         status keep their header bytes); a publication, a challenge or the settlement
    ///         passes the state back (from the events and the opening calldata) and the
    ///         contract recomputes the chain (H = keccak256 of the ABI encoding, cut to 240
    ///         bits): k1 = H(configDigest, clientsHash, revealDeadline, epsilonBudget,
    ///         numClients, challengeWindow, root, leafCount, aggregator) at the opening;
    ///         k2 = H(k1, aggregateDigest, participantsHash) once published (zero before).
    struct MerkleState {
        bytes32 configDigest;
        bytes32 clientsHash;
        uint64 revealDeadline;
        uint64 epsilonBudget;
        uint16 numClients;
        uint16 challengeWindow;
        bytes32 root;
        uint16 leafCount;
        address aggregator;
        bytes32 aggregateDigest;
        bytes32 participantsHash;
    }

    /// @notice One merkle round to settle: its id, its state (as published) and its
    ///         participants bitmap (as published).
    struct Settlement {
        uint256 round;
        MerkleState state;
        uint256[] participantWords;
    }

    /// @notice A client's EIP-712 signed commitment leaf (the `Commit` struct of batched
    ///         rounds); the round and the client come from the call and the selected list.
    struct SignedLeaf {
        bytes32 manifestDigest;
        bytes32 blobDigest;
        bytes32 eventDigest;
        uint64 epsilon;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    address public immutable admin;
    uint256 internal immutable deployChainId;
    bytes32 internal immutable cachedDomainSeparator;

    /// @notice Per-client cumulative epsilon budget (micro-epsilon), snapshot into each round.
    uint64 public epsilonBudget;

    mapping(address => Member) internal members;
    mapping(uint256 => Round) internal rounds;
    /// @dev direct rounds: 0 = not selected, SELECTED = not yet committed, else the
    ///      commitment word (COMMITTED_FLAG set, REVEALED_FLAG once revealed).
    mapping(uint256 => mapping(address => uint256)) internal commitmentOf;
    /// @dev batched rounds: committed bitmap words (255 clients per word, bit 255 sentinel).
    mapping(uint256 => mapping(uint256 => uint256)) internal committedBits;
    /// @dev batched rounds: revealed bitmap words (same layout).
    mapping(uint256 => mapping(uint256 => uint256)) internal revealedBits;
    mapping(bytes32 => bool) internal flagged;
    /// @dev merkle rounds: what challenges proved, per client (written only by a challenge).
    mapping(uint256 => mapping(address => uint8)) internal merkleFlags;

    /// @notice Decryption committee (empty until `setupCommittee`): the seed of the common
    ///         random polynomial, fixed on chain from the previous block hash and prevrandao
    ///         so no member chooses it; K members and threshold T. Once a committee is set,
    ///         only its members reserve, attest or refuse releases (not the key holder).
    bytes32 public committeeSeed;
    uint8 public committeeSize;
    uint8 public committeeThreshold;
    /// @dev member index (1..K) of each committee account, 0 for others.
    mapping(address => uint8) internal committeeIndex;
    /// @dev keccak256 of each member's public key share, committed once.
    mapping(address => bytes32) internal keyShareDigestOf;
    /// @dev per round, the digest of each member's partial decryption, attested once.
    mapping(uint256 => mapping(address => bytes32)) internal partialDigestOf;

    // ----------------------------------------------------------------------------- events
    event RolesSet(address indexed account, uint8 roles);
    event EpsilonBudgetSet(uint64 epsilonBudget);
    event RoundOpened(
        uint256 indexed round,
        bytes32 configDigest,
        uint64 deadline,
        uint64 revealDeadline,
        uint64 epsilonBudget,
        uint8 mode,
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
    event Revealed(uint256 indexed round, address indexed client);
    event AggregatePublished(uint256 indexed round, bytes32 aggregateDigest, address[] participants);
    event ReleaseReserved(uint256 indexed round);
    event RevealAttested(uint256 indexed round, bytes32 revealDigest);
    event ReleaseRefused(uint256 indexed round, uint32 reasonCode);
    event RoundFinalized(uint256 indexed round, uint16 committed, uint16 missed);
    event CommitteeSetUp(bytes32 seed, address[] members, uint8 threshold);
    event KeyShareCommitted(address indexed member, uint8 index, bytes32 shareDigest);
    event PartialAttested(uint256 indexed round, address indexed member, uint8 index, bytes32 partialDigest);
    event Flagged(address indexed client, uint256 indexed round, uint32 reasonCode, address auditor);
    /// @notice Merkle rounds: the root in the opening transaction. `leavesDigest` names the
    ///         signed leaves in the artifact store (for clients and auditors).
    event RootPosted(uint256 indexed round, bytes32 root, uint16 leafCount, bytes32 leavesDigest);
    /// @notice Merkle rounds: participants as a bitmap over indices of the selected list.
    event MerklePublished(uint256 indexed round, bytes32 aggregateDigest, uint256[] participantWords);
    /// @notice A successful challenge; `accused` is the aggregator (omission) or the client.
    event ChallengeUpheld(
        uint256 indexed round, address indexed accused, address indexed client, uint32 reasonCode
    );
    /// @notice An omission upheld earlier is void: the client equivocated (the aggregator
    ///         held its other signed leaf).
    event OmissionVoided(uint256 indexed round, address indexed client, address aggregator);
    event ReputationSettled(uint256 indexed round, uint16 positive, uint16 negative);

    // ----------------------------------------------------------------------------- errors
    error NotAdmin(address sender);
    error NotRegistered(address account, uint8 role);
    error InvalidRoles(uint8 roles);
    error ZeroAddress();
    error RoundExists(uint256 round);
    error WrongRound(uint256 round, uint8 status);
    error WrongMode(uint256 round, uint8 mode);
    error BadClientList(uint256 round);
    error ClientsNotSorted(uint256 position);
    error DeadlineInPast(uint64 deadline, uint256 blockNumber);
    error BadRevealDeadline(uint64 deadline, uint64 revealDeadline);
    error DeadlinePassed(uint256 round, uint64 deadline, uint256 blockNumber);
    error NotSelected(uint256 round, address client);
    error AlreadyCommitted(uint256 round, address client);
    error NotCommitted(uint256 round, address client);
    error WrongManifest(uint256 round, bytes32 manifestDigest);
    error CommitPhaseOpen(uint256 round);
    error RevealPhaseOpen(uint256 round);
    error NotRevealed(uint256 round, address client);
    error AlreadyRevealed(uint256 round, address client);
    error BadReason(uint32 reasonCode);
    error BudgetExceeded(address client, uint64 claimed, uint64 budget);
    error BadIndex(uint256 position, uint256 index);
    error MalformedCommit(uint256 position);
    error HighS(uint256 position);
    error InvalidSignature(uint256 position);
    error AlreadyFlagged(address client, uint256 round, uint32 reasonCode);
    error BadCommittee(uint256 size, uint8 threshold);
    error NotCommitteeMember(address account);
    error AlreadyAttested(address member);
    error BadChallengeWindow(uint16 challengeWindow);
    error StaleRoundState(uint256 round);
    error BudgetChanged(uint64 expected, uint64 budget);
    error BadLeafCount(uint256 round, uint256 leafCount);
    error BadParticipants(uint256 round);
    error ChallengeWindowClosed(uint256 round, uint256 challengeDeadline, uint256 blockNumber);
    error ChallengeWindowOpen(uint256 round, uint256 challengeDeadline);
    error BadProof(uint256 round, uint256 index);
    error NotOmitted(uint256 round, address client);
    error WithinBudget(address client, uint64 claimed, uint64 budget);
    error SameLeaf(uint256 round, address client);
    error AlreadyChallenged(uint256 round, address client, uint32 reasonCode);

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

    /// @dev Who may reserve, attest and refuse releases: the committee's members once one
    ///      is set up, the key holder otherwise.
    modifier onlyReleaser() {
        if (committeeSize != 0) {
            if (committeeIndex[msg.sender] == 0) revert NotCommitteeMember(msg.sender);
        } else if (members[msg.sender].roles & ROLE_KEY_HOLDER == 0) {
            revert NotRegistered(msg.sender, ROLE_KEY_HOLDER);
        }
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
    ///         epsilon budget in force now applies to the whole round. Commits are accepted
    ///         until block `deadline`, reveals until block `revealDeadline` (inclusive).
    function openRound(
        uint256 round,
        bytes32 configDigest,
        address[] calldata clients,
        uint64 deadline,
        uint64 revealDeadline,
        bool batched
    ) external onlyRole(ROLE_AGGREGATOR) {
        uint8 mode = batched ? MODE_BATCHED : MODE_DIRECT;
        Round storage rd = _openRound(round, configDigest, clients, deadline, revealDeadline, mode);
        rd.configDigest = configDigest;
        rd.clientsHash = keccak256(abi.encodePacked(clients));
        if (batched) {
            for (uint256 w = 0; w <= (clients.length - 1) / BITS_PER_WORD; ++w) {
                committedBits[round][w] = SENTINEL;
                revealedBits[round][w] = SENTINEL;
            }
            rd.accumulator = keccak256(abi.encode(_domainSeparator(), round, configDigest));
        }
    }

    /// @notice Open an optimistic round (merkle mode) with the root of the signed leaves the
    ///         aggregator accepted: one transaction, which also closes the commit phase
    ///         (clients signed before, for this round id and the manifest's digest). The
    ///         tree (docs/formats.md): index-ordered over the selected list, width the next
    ///         power of two >= n, leaf = keccak256(0x00 || EIP-712 digest of the client's
    ///         Commit), empty leaf = 0, node = keccak256(0x01 || left || right); nothing is
    ///         checked against the leaves here, a wrong root is caught by a challenge.
    ///         `clients` must be strictly ascending; registration is checked when a
    ///         challenge or the settlement touches a client. `budget` must be the epsilon
    ///         budget in force (the one the aggregator checked the leaves against).
    ///         Challenges are accepted from now until block `revealDeadline + challengeWindow`.
    function openRoundWithRoot(
        uint256 round,
        bytes32 configDigest,
        address[] calldata clients,
        uint64 revealDeadline,
        uint16 challengeWindow,
        uint64 budget,
        bytes32 root,
        uint16 leafCount,
        bytes32 leavesDigest
    ) external onlyRole(ROLE_AGGREGATOR) {
        Round storage rd = rounds[round];
        if (rd.header.status != STATUS_NONE) revert RoundExists(round);
        uint256 n = clients.length;
        if (n == 0 || n > MAX_CLIENTS) revert BadClientList(round);
        if (revealDeadline <= block.number) revert BadRevealDeadline(uint64(block.number), revealDeadline);
        if (challengeWindow == 0) revert BadChallengeWindow(challengeWindow);
        if (budget != epsilonBudget) revert BudgetChanged(budget, epsilonBudget);
        if (leafCount > n) revert BadLeafCount(round, leafCount);
        address previous = address(0);
        for (uint256 i = 0; i < n; ++i) {
            address client = clients[i];
            if (client <= previous) revert ClientsNotSorted(i);
            previous = client;
        }
        uint256 key = uint256(
            keccak256(
                abi.encode(
                    configDigest,
                    _hashAddresses(clients),
                    revealDeadline,
                    budget,
                    n,
                    challengeWindow,
                    root,
                    leafCount,
                    msg.sender
                )
            )
        ) & KEY_MASK;
        _setWord(rd, key | (uint256(STATUS_OPEN) << 240) | (uint256(MODE_MERKLE) << 248));
        emit RoundOpened(
            round, configDigest, uint64(block.number), revealDeadline, budget, MODE_MERKLE, new address[](0)
        );
        emit RootPosted(round, root, leafCount, leavesDigest);
    }

    /// @dev Checks and writes the header of a direct or batched round; direct rounds mark
    ///      each selected client's slot.
    function _openRound(
        uint256 round,
        bytes32 configDigest,
        address[] calldata clients,
        uint64 deadline,
        uint64 revealDeadline,
        uint8 mode
    ) internal returns (Round storage rd) {
        rd = rounds[round];
        if (rd.header.status != STATUS_NONE) revert RoundExists(round);
        uint256 n = clients.length;
        if (n == 0 || n > MAX_CLIENTS) revert BadClientList(round);
        if (deadline < block.number) revert DeadlineInPast(deadline, block.number);
        if (revealDeadline <= deadline) revert BadRevealDeadline(deadline, revealDeadline);
        address previous = address(0);
        for (uint256 i = 0; i < n; ++i) {
            address client = clients[i];
            if (client <= previous) revert ClientsNotSorted(i);
            previous = client;
            if (members[client].roles & ROLE_CLIENT == 0) revert NotRegistered(client, ROLE_CLIENT);
            if (mode == MODE_DIRECT) commitmentOf[round][client] = SELECTED;
        }
        uint64 budget = epsilonBudget;
        rd.header = Header(deadline, revealDeadline, budget, uint16(n), 0, 0, STATUS_OPEN, mode);
        emit RoundOpened(round, configDigest, deadline, revealDeadline, budget, mode, clients);
    }

    /// @notice A selected client commits to its protected update (direct rounds), binding the
    ///         manifest digest it saw (must be the round's config digest).
    function commit(
        uint256 round,
        bytes32 manifestDigest,
        bytes32 blobDigest,
        bytes32 eventDigest,
        uint64 epsilon
    ) external {
        Round storage rd = rounds[round];
        Header memory h = rd.header;
        if (h.status != STATUS_OPEN) revert WrongRound(round, h.status);
        if (h.mode != MODE_DIRECT) revert WrongMode(round, h.mode);
        _checkCommitPhase(round, h);
        if (manifestDigest != rd.configDigest) revert WrongManifest(round, manifestDigest);
        if (epsilon > h.epsilonBudget) revert BudgetExceeded(msg.sender, epsilon, h.epsilonBudget);
        uint256 current = commitmentOf[round][msg.sender];
        if (current != SELECTED) {
            if (current != 0) revert AlreadyCommitted(round, msg.sender);
            if (members[msg.sender].roles & ROLE_CLIENT == 0) {
                revert NotRegistered(msg.sender, ROLE_CLIENT);
            }
            revert NotSelected(round, msg.sender);
        }
        commitmentOf[round][msg.sender] = (
            uint256(keccak256(abi.encode(blobDigest, eventDigest, epsilon))) & ~FLAGS
        ) | COMMITTED_FLAG;
        rd.header.committed = h.committed + 1;
        emit Committed(round, msg.sender, blobDigest, eventDigest, epsilon);
    }

    /// @notice Batched rounds: a selected client commits by itself (the fallback when the
    ///         aggregator's batch left its signed commitment out).
    /// @param clients the round's full selected list (checked against the stored hash).
    function commitOwn(
        uint256 round,
        address[] calldata clients,
        bytes32 manifestDigest,
        bytes32 blobDigest,
        bytes32 eventDigest,
        uint64 epsilon
    ) external {
        Round storage rd = rounds[round];
        Header memory h = _openBatchedRound(round, clients);
        if (manifestDigest != rd.configDigest) revert WrongManifest(round, manifestDigest);
        if (epsilon > h.epsilonBudget) revert BudgetExceeded(msg.sender, epsilon, h.epsilonBudget);
        uint256 index = _indexOf(round, clients, msg.sender);
        uint256 w = index / BITS_PER_WORD;
        uint256 mask = 1 << (index % BITS_PER_WORD);
        uint256 bits = committedBits[round][w];
        if (bits & mask != 0) revert AlreadyCommitted(round, msg.sender);
        committedBits[round][w] = bits | mask;
        rd.accumulator = _chain(rd.accumulator, msg.sender, blobDigest, eventDigest, epsilon);
        rd.header.committed = h.committed + 1;
        emit Committed(round, msg.sender, blobDigest, eventDigest, epsilon);
    }

    /// @notice The aggregator submits clients' EIP-712 signed commitments (batched rounds).
    /// @param clients the round's full selected list (checked against the stored hash).
    function commitBatch(
        uint256 round,
        address[] calldata clients,
        SignedCommit[] calldata commits
    ) external onlyRole(ROLE_AGGREGATOR) {
        Header memory h = _openBatchedRound(round, clients);
        uint256 count = commits.length;
        address[] memory committers = new address[](count);
        bytes32[] memory blobDigests = new bytes32[](count);
        bytes32[] memory eventDigests = new bytes32[](count);
        uint64[] memory epsilons = new uint64[](count);
        Round storage rd = rounds[round];
        bytes32 acc = rd.accumulator;
        bytes32 manifestDigest = rd.configDigest;
        uint256 wordIndex = type(uint256).max;
        uint256 bits = 0;
        for (uint256 i = 0; i < count; ++i) {
            SignedCommit calldata c = commits[i];
            bytes32 blobDigest = c.blobDigest;
            bytes32 eventDigest = c.eventDigest;
            (address client, uint256 index, uint64 epsilon) =
                _verifiedSigner(i, round, manifestDigest, clients, c, h.epsilonBudget);
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
        rd.accumulator = acc;
        rd.header.committed = h.committed + uint16(count);
        emit BatchCommitted(round, committers, blobDigests, eventDigests, epsilons);
    }

    /// @notice Direct rounds: the sender records that it revealed (put its blob and event in
    ///         the store) in the reveal phase.
    function reveal(uint256 round) external {
        Round storage rd = rounds[round];
        Header memory h = rd.header;
        if (h.status != STATUS_OPEN) revert WrongRound(round, h.status);
        if (h.mode != MODE_DIRECT) revert WrongMode(round, h.mode);
        _checkRevealPhase(round, h);
        uint256 current = commitmentOf[round][msg.sender];
        if (current & COMMITTED_FLAG == 0) revert NotCommitted(round, msg.sender);
        if (current & REVEALED_FLAG != 0) revert AlreadyRevealed(round, msg.sender);
        commitmentOf[round][msg.sender] = current | REVEALED_FLAG;
        rd.header.revealed = h.revealed + 1;
        emit Revealed(round, msg.sender);
    }

    /// @notice Batched rounds: a committed client records its reveal itself (the fallback
    ///         when it fears the aggregator will leave it out of the participants).
    /// @param clients the round's full selected list (checked against the stored hash).
    function revealOwn(uint256 round, address[] calldata clients) external {
        Round storage rd = rounds[round];
        Header memory h = rd.header;
        if (h.status != STATUS_OPEN) revert WrongRound(round, h.status);
        if (h.mode != MODE_BATCHED) revert WrongMode(round, h.mode);
        if (keccak256(abi.encodePacked(clients)) != rd.clientsHash) revert BadClientList(round);
        _checkRevealPhase(round, h);
        uint256 index = _indexOf(round, clients, msg.sender);
        uint256 w = index / BITS_PER_WORD;
        uint256 mask = 1 << (index % BITS_PER_WORD);
        if (committedBits[round][w] & mask == 0) revert NotCommitted(round, msg.sender);
        uint256 bits = revealedBits[round][w];
        if (bits & mask != 0) revert AlreadyRevealed(round, msg.sender);
        revealedBits[round][w] = bits | mask;
        rd.header.revealed = h.revealed + 1;
        emit Revealed(round, msg.sender);
    }

    /// @notice The aggregator publishes the aggregate's digest and who is in it. Only once
    ///         the commit phase is closed, and before the reveal deadline only if every
    ///         committed client is a participant. Participants are strictly ascending; each
    ///         committed (direct rounds: and revealed; batched rounds: this marks it revealed).
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
        if (h.mode == MODE_MERKLE) revert WrongMode(round, h.mode);
        if (keccak256(abi.encodePacked(clients)) != rd.clientsHash) revert BadClientList(round);
        if (!_commitPhaseClosed(h)) revert CommitPhaseOpen(round);
        _checkParticipants(round, h.mode == MODE_BATCHED, clients, participants);
        if (participants.length != h.committed && block.number <= h.revealDeadline) {
            revert RevealPhaseOpen(round);
        }
        rd.header.status = STATUS_AGGREGATED;
        rd.aggregateDigest = aggregateDigest;
        rd.participantsHash = keccak256(abi.encodePacked(participants));
        emit AggregatePublished(round, aggregateDigest, participants);
    }

    /// @notice The key holder reserves the round's one release BEFORE it decrypts.
    function reserveRelease(uint256 round) external onlyReleaser {
        Round storage rd = rounds[round];
        if (rd.header.status != STATUS_AGGREGATED) revert WrongRound(round, rd.header.status);
        rd.header.status = STATUS_RELEASING;
        emit ReleaseReserved(round);
    }

    /// @notice The key holder attests the digest of what it released (after reserving).
    ///         Merkle rounds keep O(1) state: the digest is in the event only (auditors
    ///         read it there), not in storage.
    function attestReveal(uint256 round, bytes32 revealDigest) external onlyReleaser {
        Round storage rd = rounds[round];
        Header memory h = rd.header;
        if (h.status != STATUS_RELEASING) revert WrongRound(round, h.status);
        rd.header.status = STATUS_REVEALED;
        if (h.mode != MODE_MERKLE) rd.revealDigest = revealDigest;
        emit RevealAttested(round, revealDigest);
    }

    /// @notice The key holder attests that it refused to release this round, and why
    ///         (`reasonCode` > 0; the codes are the off-chain key holder's).
    ///         Merkle rounds: the code is in the event only.
    function attestRefusal(uint256 round, uint32 reasonCode) external onlyReleaser {
        Round storage rd = rounds[round];
        Header memory h = rd.header;
        if (h.status != STATUS_AGGREGATED && h.status != STATUS_RELEASING) {
            revert WrongRound(round, h.status);
        }
        if (reasonCode == 0) revert BadReason(reasonCode);
        rd.header.status = STATUS_REFUSED;
        if (h.mode != MODE_MERKLE) rd.refusalCode = reasonCode;
        emit ReleaseRefused(round, reasonCode);
    }

    // ------------------------------------------------------------- decryption committee
    /// @notice Set up the decryption committee once: K distinct accounts holding the
    ///         committee role (member i is `committee[i-1]`), threshold T. The CRP seed is
    ///         derived here from the previous block's hash and prevrandao.
    function setupCommittee(address[] calldata committee, uint8 threshold) external onlyAdmin {
        uint256 size = committee.length;
        if (committeeSize != 0 || size < 2 || size > MAX_COMMITTEE || threshold == 0 || threshold > size) {
            revert BadCommittee(size, threshold);
        }
        for (uint256 i = 0; i < size; ++i) {
            address account = committee[i];
            if (members[account].roles & ROLE_COMMITTEE == 0) revert NotRegistered(account, ROLE_COMMITTEE);
            if (committeeIndex[account] != 0) revert BadCommittee(size, threshold);
            committeeIndex[account] = uint8(i + 1);
        }
        bytes32 seed = keccak256(
            abi.encodePacked(blockhash(block.number - 1), block.prevrandao, address(this), committee, threshold)
        );
        committeeSeed = seed;
        committeeSize = uint8(size);
        committeeThreshold = threshold;
        emit CommitteeSetUp(seed, committee, threshold);
    }

    /// @notice A committee member commits the digest of its public key share, once.
    function commitKeyShare(bytes32 shareDigest) external {
        uint8 index = committeeIndex[msg.sender];
        if (index == 0) revert NotCommitteeMember(msg.sender);
        if (keyShareDigestOf[msg.sender] != bytes32(0)) revert AlreadyAttested(msg.sender);
        if (shareDigest == bytes32(0)) revert BadReason(0);
        keyShareDigestOf[msg.sender] = shareDigest;
        emit KeyShareCommitted(msg.sender, index, shareDigest);
    }

    /// @notice A committee member attests the digest of its partial decryption of a round's
    ///         aggregate, once per round, only while the round's release is reserved.
    function attestPartial(uint256 round, bytes32 partialDigest) external {
        uint8 index = committeeIndex[msg.sender];
        if (index == 0) revert NotCommitteeMember(msg.sender);
        Round storage rd = rounds[round];
        if (rd.header.status != STATUS_RELEASING) revert WrongRound(round, rd.header.status);
        if (partialDigestOf[round][msg.sender] != bytes32(0)) revert AlreadyAttested(msg.sender);
        if (partialDigest == bytes32(0)) revert BadReason(0);
        partialDigestOf[round][msg.sender] = partialDigest;
        emit PartialAttested(round, msg.sender, index, partialDigest);
    }

    /// @notice A committee member's index (1..K, 0 if none) and committed key share digest.
    function committeeMember(address account) external view returns (uint8, bytes32) {
        return (committeeIndex[account], keyShareDigestOf[account]);
    }

    /// @notice The digest a committee member attested for its partial of `round` (0: none).
    function partialDigest(uint256 round, address member) external view returns (bytes32) {
        return partialDigestOf[round][member];
    }

    /// @notice Finalize: every selected client gets a positive event if it committed and
    ///         revealed, a negative one otherwise. `clients` is the round's selected list.
    function finalize(uint256 round, address[] calldata clients) external onlyRole(ROLE_AGGREGATOR) {
        Round storage rd = rounds[round];
        Header memory h = rd.header;
        if (
            h.status != STATUS_AGGREGATED && h.status != STATUS_REVEALED
                && h.status != STATUS_REFUSED
        ) {
            revert WrongRound(round, h.status);
        }
        if (h.mode == MODE_MERKLE) revert WrongMode(round, h.mode);
        if (keccak256(abi.encodePacked(clients)) != rd.clientsHash) revert BadClientList(round);
        bool batched = h.mode == MODE_BATCHED;
        uint16 doneCount = 0;
        uint256 wordIndex = type(uint256).max;
        uint256 bits = 0;
        for (uint256 i = 0; i < clients.length; ++i) {
            address client = clients[i];
            bool done;
            if (batched) {
                uint256 w = i / BITS_PER_WORD;
                if (w != wordIndex) {
                    wordIndex = w;
                    bits = committedBits[round][w] & revealedBits[round][w];
                }
                done = bits & (1 << (i % BITS_PER_WORD)) != 0;
            } else {
                done = commitmentOf[round][client] & FLAGS == FLAGS;
            }
            Member storage m = members[client];
            if (done) {
                ++doneCount;
                m.positive += 1;
            } else {
                m.negative += 1;
            }
        }
        uint16 missedCount = uint16(clients.length) - doneCount;
        rd.header.status = STATUS_FINALIZED;
        rd.committed = doneCount;
        rd.missed = missedCount;
        emit RoundFinalized(round, doneCount, missedCount);
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

    // ------------------------------------------------------- merkle (optimistic) rounds
    /// @notice Merkle rounds: the aggregator publishes the aggregate's digest and its
    ///         participants, a bitmap over indices of the selected list (bit i of word
    ///         i / 256). Only the account that opened the round; `state` is the round's
    ///         state as opened. Before the reveal deadline only if every non-empty leaf is a
    ///         participant.
    function publishMerkleRound(
        uint256 round,
        MerkleState calldata state,
        bytes32 aggregateDigest,
        uint256[] calldata participantWords
    ) external {
        if (msg.sender != state.aggregator) revert NotRegistered(msg.sender, ROLE_AGGREGATOR);
        _publish(round, state, aggregateDigest, participantWords, STATUS_AGGREGATED);
    }

    /// @notice Merkle rounds with a release: the releaser sends the aggregator's EIP-712
    ///         signed publication (`Publish(round, aggregateDigest, participantsHash)`) and
    ///         reserves the round's one release in the same transaction, BEFORE it
    ///         decrypts; a second reservation (or publication) of the round reverts.
    function reserveAndPublish(
        uint256 round,
        MerkleState calldata state,
        bytes32 aggregateDigest,
        uint256[] calldata participantWords,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external onlyReleaser {
        bytes32 participantsHash =
            _publish(round, state, aggregateDigest, participantWords, STATUS_RELEASING);
        if (uint256(s) > HALF_ORDER) revert HighS(0);
        bytes32 structHash =
            keccak256(abi.encode(PUBLISH_TYPEHASH, round, aggregateDigest, participantsHash));
        address signer = _recover(structHash, v, r, s);
        if (signer == address(0) || signer != state.aggregator) revert InvalidSignature(0);
        emit ReleaseReserved(round);
    }

    /// @dev Checks and records a merkle round's publication; the round moves to `status`.
    function _publish(
        uint256 round,
        MerkleState calldata state,
        bytes32 aggregateDigest,
        uint256[] calldata participantWords,
        uint8 status
    ) internal returns (bytes32 participantsHash) {
        uint8 current = _merkleRound(round, state);
        if (current != STATUS_OPEN) revert WrongRound(round, current);
        uint256 n = state.numClients;
        uint256 words = participantWords.length;
        if (words != (n + 255) / 256) revert BadParticipants(round);
        if (n % 256 != 0 && participantWords[words - 1] >> (n % 256) != 0) {
            revert BadParticipants(round);
        }
        uint256 count = 0;
        for (uint256 w = 0; w < words; ++w) {
            count += _popcount(participantWords[w]);
        }
        if (count == 0) revert BadParticipants(round);
        if (count != state.leafCount && block.number <= state.revealDeadline) {
            revert RevealPhaseOpen(round);
        }
        participantsHash = keccak256(abi.encodePacked(participantWords));
        uint256 key = uint256(
            keccak256(abi.encode(_openKey(state), aggregateDigest, participantsHash))
        ) & KEY_MASK;
        _setWord(rounds[round], key | (uint256(status) << 240) | (uint256(MODE_MERKLE) << 248));
        emit MerklePublished(round, aggregateDigest, participantWords);
    }

    /// @notice Omission: `leaf` is validly signed by the client at `index` for this round and
    ///         manifest, within the budget, and the root holds `atIndex` != its leaf hash
    ///         there (`proof`: siblings bottom-up). The aggregator gets a negative event and
    ///         the client counts as done at settlement. Anyone may submit it.
    function proveLeafMissing(
        uint256 round,
        MerkleState calldata state,
        address[] calldata clients,
        uint256 index,
        SignedLeaf calldata leaf,
        bytes32 atIndex,
        bytes32[] calldata proof
    ) external {
        _challengeable(round, state);
        address client = _clientAt(round, state, clients, index);
        if (leaf.manifestDigest != state.configDigest) revert WrongManifest(round, leaf.manifestDigest);
        if (leaf.epsilon > state.epsilonBudget) {
            revert BudgetExceeded(client, leaf.epsilon, state.epsilonBudget);
        }
        bytes32 leafHash = _leafOf(round, client, leaf, 0);
        _verifyProof(round, state.root, state.numClients, index, atIndex, proof);
        if (atIndex == leafHash) revert NotOmitted(round, client);
        uint8 proven = merkleFlags[round][client];
        if (proven & (OMISSION_PROVEN | EQUIVOCATION_PROVEN) != 0) {
            revert AlreadyChallenged(round, client, REASON_OMISSION);
        }
        merkleFlags[round][client] = proven | OMISSION_PROVEN;
        members[state.aggregator].negative += 1;
        emit ChallengeUpheld(round, state.aggregator, client, REASON_OMISSION);
    }

    /// @notice Over budget: a leaf in the root at `index`, signed by that client, claims a
    ///         cumulative epsilon over the round's budget. The client gets a negative event.
    function proveBudgetOverrun(
        uint256 round,
        MerkleState calldata state,
        address[] calldata clients,
        uint256 index,
        SignedLeaf calldata leaf,
        bytes32[] calldata proof
    ) external {
        _challengeable(round, state);
        address client = _clientAt(round, state, clients, index);
        bytes32 leafHash = _leafOf(round, client, leaf, 0);
        _verifyProof(round, state.root, state.numClients, index, leafHash, proof);
        if (leaf.epsilon <= state.epsilonBudget) {
            revert WithinBudget(client, leaf.epsilon, state.epsilonBudget);
        }
        uint8 proven = merkleFlags[round][client];
        if (proven & OVER_BUDGET_PROVEN != 0) revert AlreadyChallenged(round, client, REASON_OVER_BUDGET);
        merkleFlags[round][client] = proven | OVER_BUDGET_PROVEN;
        members[client].negative += 1;
        emit ChallengeUpheld(round, client, client, REASON_OVER_BUDGET);
    }

    /// @notice Equivocation: two different leaves signed by the client at `index` for this
    ///         round. The client gets a negative event, and an omission it proved in this
    ///         round is void (the aggregator's negative event is taken back).
    function proveConflictingLeaf(
        uint256 round,
        MerkleState calldata state,
        address[] calldata clients,
        uint256 index,
        SignedLeaf calldata first,
        SignedLeaf calldata second
    ) external {
        _challengeable(round, state);
        address client = _clientAt(round, state, clients, index);
        bytes32 firstHash = _leafOf(round, client, first, 0);
        if (firstHash == _leafOf(round, client, second, 1)) revert SameLeaf(round, client);
        uint8 proven = merkleFlags[round][client];
        if (proven & EQUIVOCATION_PROVEN != 0) {
            revert AlreadyChallenged(round, client, REASON_EQUIVOCATION);
        }
        if (proven & OMISSION_PROVEN != 0) {
            proven &= ~OMISSION_PROVEN;
            Member storage aggregator = members[state.aggregator];
            if (aggregator.negative > 0) aggregator.negative -= 1;
            emit OmissionVoided(round, client, state.aggregator);
        }
        merkleFlags[round][client] = proven | EQUIVOCATION_PROVEN;
        members[client].negative += 1;
        emit ChallengeUpheld(round, client, client, REASON_EQUIVOCATION);
    }

    /// @notice Settle the reputation of merkle rounds whose challenge windows have passed,
    ///         in one transaction (anyone may call, once per round). Every round in `batch`
    ///         must have the selected list `clients` (rounds with other lists go in another
    ///         call). Per round, +1 for each registered selected client that is a
    ///         participant or proved an omission, -1 for the others; each client's counts
    ///         are written once for all the rounds, so k rounds share one storage write.
    ///         Finalizes every round (one `RoundFinalized` each); a failing check in any
    ///         round reverts the whole call.
    function finalizeOptimisticRoundBatch(Settlement[] calldata batch, address[] calldata clients)
        external
    {
        uint256 k = batch.length;
        bytes32 clientsHash = _hashAddresses(clients);
        for (uint256 r = 0; r < k; ++r) {
            uint256 round = batch[r].round;
            MerkleState calldata state = batch[r].state;
            uint8 status = _merkleRound(round, state);
            if (status != STATUS_AGGREGATED && status != STATUS_REVEALED && status != STATUS_REFUSED) {
                revert WrongRound(round, status);
            }
            uint256 challengeDeadline = uint256(state.revealDeadline) + state.challengeWindow;
            if (block.number <= challengeDeadline) revert ChallengeWindowOpen(round, challengeDeadline);
            if (state.clientsHash != clientsHash) revert BadClientList(round);
            if (keccak256(abi.encodePacked(batch[r].participantWords)) != state.participantsHash) {
                revert BadParticipants(round);
            }
            // Written now, so a round listed twice reverts (WrongRound) at its second entry.
            rounds[round].header.status = STATUS_FINALIZED;
        }
        uint256 n = clients.length;
        uint256 skipped = 0; // unregistered clients: reputation untouched, counted as missed
        uint256[] memory missed = new uint256[](k); // registered, not done
        uint256[] memory words = new uint256[](k);
        uint256 inAll = 0; // participants of every round (the common case: no per-round walk)
        for (uint256 i = 0; i < n; ++i) {
            uint256 bit = i % 256;
            if (bit == 0) {
                inAll = type(uint256).max;
                for (uint256 r = 0; r < k; ++r) {
                    uint256 word = batch[r].participantWords[i / 256];
                    words[r] = word;
                    inAll &= word;
                }
            }
            address client = clients[i];
            Member storage m = members[client];
            uint256 slotWord;
            assembly ("memory-safe") {
                slotWord := sload(m.slot)
            }
            if (slotWord & ROLE_CLIENT == 0) {
                ++skipped;
                continue;
            }
            uint32 negative = 0;
            if ((inAll >> bit) & 1 == 0) {
                for (uint256 r = 0; r < k; ++r) {
                    if (
                        (words[r] >> bit) & 1 == 0
                            && merkleFlags[batch[r].round][client] & OMISSION_PROVEN == 0
                    ) {
                        ++negative;
                        ++missed[r];
                    }
                }
            }
            // One write of the packed Member slot (roles: bits 0-7, positive: 8-39,
            // negative: 40-71), checked like `m.positive += ...`.
            uint256 positive = uint32(slotWord >> 8) + uint32(k) - negative;
            uint256 negatives = uint32(slotWord >> 40) + negative;
            slotWord = (slotWord & ~(uint256(type(uint64).max) << 8)) | (positive << 8) | (negatives << 40);
            assembly ("memory-safe") {
                sstore(m.slot, slotWord)
            }
        }
        for (uint256 r = 0; r < k; ++r) {
            uint16 doneCount = uint16(n - skipped - missed[r]);
            emit RoundFinalized(batch[r].round, doneCount, uint16(n) - doneCount);
        }
    }

    /// @notice Merkle rounds: the stored hash chain of the round's `MerkleState` (the low
    ///         240 bits of the header word).
    function roundMerkleKey(uint256 round) external view returns (bytes32) {
        return bytes32(_word(round) & KEY_MASK);
    }

    /// @notice Merkle rounds: what challenges proved for `client` (bits: 1 omission,
    ///         2 over budget, 4 equivocation).
    function provenChallenges(uint256 round, address client) external view returns (uint8) {
        return merkleFlags[round][client];
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
        returns (
            uint64 deadline,
            uint64 revealDeadline,
            uint64 budget,
            uint16 numClients,
            uint16 committed,
            uint16 revealed,
            uint8 status,
            uint8 mode
        )
    {
        Header memory h = rounds[round].header;
        return (
            h.deadline,
            h.revealDeadline,
            h.epsilonBudget,
            h.numClients,
            h.committed,
            h.revealed,
            h.status,
            h.mode
        );
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
            uint16 missed,
            uint32 refusalCode
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
            rd.missed,
            rd.refusalCode
        );
    }

    /// @notice Direct rounds: 0 = not selected, 1 = selected and not committed, otherwise
    ///         keccak256(abi.encode(blobDigest, eventDigest, epsilon)) with bit 1 set
    ///         (committed) and bit 0 = revealed.
    function commitment(uint256 round, address client) external view returns (bytes32) {
        return bytes32(commitmentOf[round][client]);
    }

    /// @notice Batched rounds: whether the client at `index` of the selected list committed.
    function hasCommittedIndex(uint256 round, uint256 index) external view returns (bool) {
        return committedBits[round][index / BITS_PER_WORD] & (1 << (index % BITS_PER_WORD)) != 0;
    }

    /// @notice Batched rounds: whether the client at `index` of the selected list revealed.
    function hasRevealedIndex(uint256 round, uint256 index) external view returns (bool) {
        return revealedBits[round][index / BITS_PER_WORD] & (1 << (index % BITS_PER_WORD)) != 0;
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparator();
    }

    // ------------------------------------------------------------------------ internal
    /// @dev The round's header word (a merkle round's mode, status and state key).
    function _word(uint256 round) internal view returns (uint256 word) {
        Round storage rd = rounds[round];
        assembly ("memory-safe") {
            word := sload(rd.slot)
        }
    }

    /// @dev Writes a merkle round's header word (the header is the Round's first slot).
    function _setWord(Round storage rd, uint256 word) internal {
        assembly ("memory-safe") {
            sstore(rd.slot, word)
        }
    }

    /// @dev A merkle round whose state is `state`; returns its status.
    function _merkleRound(uint256 round, MerkleState calldata state)
        internal
        view
        returns (uint8 status)
    {
        uint256 word = _word(round);
        status = uint8(word >> 240);
        if (status == STATUS_NONE) revert WrongRound(round, status);
        if (uint8(word >> 248) != MODE_MERKLE) revert WrongMode(round, uint8(word >> 248));
        uint256 key = _openKey(state);
        if (state.participantsHash != 0) {
            key = uint256(
                keccak256(abi.encode(key, state.aggregateDigest, state.participantsHash))
            ) & KEY_MASK;
        }
        if (key != word & KEY_MASK) revert StaleRoundState(round);
    }

    /// @dev k1, the key of the round as opened.
    function _openKey(MerkleState calldata state) internal pure returns (uint256) {
        return uint256(
            keccak256(
                abi.encode(
                    state.configDigest,
                    state.clientsHash,
                    state.revealDeadline,
                    state.epsilonBudget,
                    state.numClients,
                    state.challengeWindow,
                    state.root,
                    state.leafCount,
                    state.aggregator
                )
            )
        ) & KEY_MASK;
    }

    /// @dev keccak256(abi.encodePacked(addresses)) straight from calldata (each address is
    ///      already one 32-byte word there).
    function _hashAddresses(address[] calldata addresses) internal pure returns (bytes32 digest) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            let size := mul(addresses.length, 0x20)
            calldatacopy(ptr, addresses.offset, size)
            digest := keccak256(ptr, size)
        }
    }

    /// @dev Challenges need a block within the challenge window (the root is posted at the
    ///      opening).
    function _challengeable(uint256 round, MerkleState calldata state) internal view {
        uint8 status = _merkleRound(round, state);
        uint256 challengeDeadline = uint256(state.revealDeadline) + state.challengeWindow;
        if (block.number > challengeDeadline || status == STATUS_FINALIZED) {
            revert ChallengeWindowClosed(round, challengeDeadline, block.number);
        }
    }

    /// @dev The registered client at `index` of the round's (hash-checked) selected list.
    function _clientAt(
        uint256 round,
        MerkleState calldata state,
        address[] calldata clients,
        uint256 index
    ) internal view returns (address client) {
        if (_hashAddresses(clients) != state.clientsHash) revert BadClientList(round);
        if (index >= clients.length) revert BadIndex(0, index);
        client = clients[index];
        if (members[client].roles & ROLE_CLIENT == 0) revert NotRegistered(client, ROLE_CLIENT);
    }

    /// @dev Checks `leaf` is a low-s EIP-712 signature by `client` for `round`; returns its
    ///      leaf hash keccak256(0x00 || digest).
    function _leafOf(uint256 round, address client, SignedLeaf calldata leaf, uint256 position)
        internal
        view
        returns (bytes32)
    {
        if (uint256(leaf.s) > HALF_ORDER) revert HighS(position);
        bytes32 digest = keccak256(
            abi.encodePacked(
                hex"1901",
                _domainSeparator(),
                _structHash(
                    round, client, leaf.manifestDigest, leaf.blobDigest, leaf.eventDigest, leaf.epsilon
                )
            )
        );
        address signer = ecrecover(digest, leaf.v, leaf.r, leaf.s);
        if (signer == address(0) || signer != client) revert InvalidSignature(position);
        return keccak256(abi.encodePacked(bytes1(0x00), digest));
    }

    /// @dev `value` sits at `index` of the tree of `root` over `n` leaves (depth ceil(log2 n)).
    function _verifyProof(
        uint256 round,
        bytes32 root,
        uint256 n,
        uint256 index,
        bytes32 value,
        bytes32[] calldata proof
    ) internal pure {
        uint256 depth = 0;
        while ((uint256(1) << depth) < n) ++depth;
        if (proof.length != depth) revert BadProof(round, index);
        bytes32 node = value;
        for (uint256 k = 0; k < depth; ++k) {
            node = (index >> k) & 1 == 0
                ? keccak256(abi.encodePacked(bytes1(0x01), node, proof[k]))
                : keccak256(abi.encodePacked(bytes1(0x01), proof[k], node));
        }
        if (node != root) revert BadProof(round, index);
    }

    function _popcount(uint256 word) internal pure returns (uint256 count) {
        unchecked {
            for (; word != 0; ++count) {
                word &= word - 1;
            }
        }
    }

    function _commitPhaseClosed(Header memory h) internal view returns (bool) {
        return block.number > h.deadline || h.committed == h.numClients;
    }

    function _checkCommitPhase(uint256 round, Header memory h) internal view {
        if (block.number > h.deadline) revert DeadlinePassed(round, h.deadline, block.number);
    }

    /// @dev Reveals only once no one can commit any more, and until the reveal deadline.
    function _checkRevealPhase(uint256 round, Header memory h) internal view {
        if (!_commitPhaseClosed(h)) revert CommitPhaseOpen(round);
        if (block.number > h.revealDeadline) {
            revert DeadlinePassed(round, h.revealDeadline, block.number);
        }
    }

    /// @dev Checks a batched round accepts commits now and `clients` is its selection.
    function _openBatchedRound(uint256 round, address[] calldata clients)
        internal
        view
        returns (Header memory h)
    {
        Round storage rd = rounds[round];
        h = rd.header;
        if (h.status != STATUS_OPEN) revert WrongRound(round, h.status);
        if (h.mode != MODE_BATCHED) revert WrongMode(round, h.mode);
        _checkCommitPhase(round, h);
        if (keccak256(abi.encodePacked(clients)) != rd.clientsHash) revert BadClientList(round);
    }

    /// @dev Position of `client` in the (ascending, hash-checked) selected list: binary search.
    function _indexOf(uint256 round, address[] calldata clients, address client)
        internal
        view
        returns (uint256)
    {
        uint256 lo = 0;
        uint256 hi = clients.length;
        while (lo < hi) {
            uint256 mid = (lo + hi) / 2;
            address at = clients[mid];
            if (at == client) return mid;
            if (at < client) lo = mid + 1;
            else hi = mid;
        }
        if (members[client].roles & ROLE_CLIENT == 0) revert NotRegistered(client, ROLE_CLIENT);
        revert NotSelected(round, client);
    }

    /// @dev Unpacks and checks (index, budget, low-s, EIP-712 signature) the commit at
    ///      position i; returns the selected client that signed it.
    function _verifiedSigner(
        uint256 i,
        uint256 round,
        bytes32 manifestDigest,
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
        address signer = _recover(
            _structHash(round, client, manifestDigest, c.blobDigest, c.eventDigest, epsilon),
            meta >> 80,
            c.r,
            sigS
        );
        if (signer == address(0) || signer != client) revert InvalidSignature(i);
    }

    /// @dev Participants are strictly ascending and each committed in `round`. Direct: its
    ///      slot holds a revealed commitment. Batched: its committed bit is set (found by a
    ///      merge walk of the two sorted lists), and its revealed bit is set here.
    function _checkParticipants(
        uint256 round,
        bool batched,
        address[] calldata clients,
        address[] calldata participants
    ) internal {
        address previous = address(0);
        uint256 j = 0;
        uint256 wordIndex = type(uint256).max;
        uint256 revealed = 0;
        for (uint256 i = 0; i < participants.length; ++i) {
            address p = participants[i];
            if (p <= previous) revert ClientsNotSorted(i);
            previous = p;
            if (!batched) {
                uint256 current = commitmentOf[round][p];
                if (current & COMMITTED_FLAG == 0) revert NotCommitted(round, p);
                if (current & REVEALED_FLAG == 0) revert NotRevealed(round, p);
                continue;
            }
            while (j < clients.length && clients[j] < p) ++j;
            if (j == clients.length || clients[j] != p) revert NotCommitted(round, p);
            uint256 w = j / BITS_PER_WORD;
            uint256 mask = 1 << (j % BITS_PER_WORD);
            if (committedBits[round][w] & mask == 0) revert NotCommitted(round, p);
            if (w != wordIndex) {
                if (wordIndex != type(uint256).max) revealedBits[round][wordIndex] = revealed;
                wordIndex = w;
                revealed = revealedBits[round][w];
            }
            revealed |= mask;
        }
        if (wordIndex != type(uint256).max) revealedBits[round][wordIndex] = revealed;
    }

    /// @dev EIP-712 struct hash of Commit(round, client, manifest, blob, event, epsilon).
    function _structHash(
        uint256 round,
        address client,
        bytes32 manifestDigest,
        bytes32 blobDigest,
        bytes32 eventDigest,
        uint64 epsilon
    ) internal pure returns (bytes32 structHash) {
        bytes32 typeHash = COMMIT_TYPEHASH;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            mstore(add(ptr, 0x20), round)
            mstore(add(ptr, 0x40), client)
            mstore(add(ptr, 0x60), manifestDigest)
            mstore(add(ptr, 0x80), blobDigest)
            mstore(add(ptr, 0xa0), eventDigest)
            mstore(add(ptr, 0xc0), epsilon)
            structHash := keccak256(ptr, 0xe0)
        }
    }

    /// @dev EIP-712 digest of a struct hash and ecrecover, in scratch memory past the free
    ///      pointer (nothing allocated per client).
    function _recover(bytes32 structHash, uint256 v, bytes32 r, bytes32 sigS)
        internal
        view
        returns (address signer)
    {
        bytes32 domain = _domainSeparator();
        assembly ("memory-safe") {
            let ptr := mload(0x40)
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
