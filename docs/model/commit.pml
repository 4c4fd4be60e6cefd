/*
 * commit.pml -- a SPIN model of commitd's presumed-abort two-phase commit,
 * following engine/shard.go (coordinator) and engine/participant.go
 * (participant). README.md maps every process, message and variable to
 * the Go code; check.sh runs it.
 *
 * One transaction, NP participants (NP == 1 is one-phase commit).
 *
 * Abstractions, and why they are sound for one transaction:
 *  - The network is a SET of messages per direction and participant: one
 *    bit per message kind. With one transaction all copies of a kind are
 *    identical, so a set gives loss, duplication, reordering and any delay.
 *    A delivery may take the message out, leave a copy (a duplicate comes
 *    later), or lose it. Bits survive a crash of the sender: in-flight
 *    messages may still arrive after it restarted.
 *  - Timers (prepare timeout, inquiry, commit redelivery, forgetting) are
 *    nondeterministic and may fire whenever their precondition holds. A
 *    resend is enabled only while the same message is not in flight (a
 *    resend of an in-flight message adds nothing a duplicate does not).
 *  - A log is an array of records with n (appended) and d (durable). A
 *    group commit makes everything appended durable (Durable(n)). A crash
 *    keeps every durable record and any prefix of the others, and the node
 *    restarts at once, restoring from what was kept (Restore, then start()).
 *  - The resource is a fixed answer to Prepare per participant (pvote);
 *    what it did is recorded in never-reset ghosts g_*.
 *
 * Build options (spin -D...):
 *   NP=1|2|3          participants
 *   MAXCRASH=n        crashes allowed in total (any node, any time)
 *   LIVE              liveness run: loss and duplication bounded by
 *                     MAXLOSS / MAXDUP, and the LTL claim `live'
 *   NETBUDGET         bound loss and duplication in a safety run too
 *                     (otherwise unbounded)
 *   REUSE             (NP >= 2, safety only) the client begins the id
 *                     again, for other work at every participant, once the
 *                     coordinator has forgotten it (after finishing it, or
 *                     in a crash) and once no vote of the first use is
 *                     still to be sent: the reuses the id window
 *                     (Shard.checkIDTime) would have refused, minus the
 *                     one the participants cannot help (docs/protocol.md).
 *                     Checks the participants' rule (prepareAgain).
 *   STAGED            (NP >= 2) staged decisions (issue 16, docs/protocol.md
 *                     "Staged commits"): the coordinator appends STAGED and
 *                     sends the prepares at once; "committed" is told when
 *                     STAGED is durable and every vote is YES; a transaction
 *                     without a durable decision is settled by resolution
 *                     (prepared or prevented), never aborted on a timeout;
 *                     an abort is logged before anyone is told. A crash of
 *                     the coordinator may leave the old incarnation alive as
 *                     a deposed leader (a "zombie", safety runs only) that
 *                     still collects votes and may tell its client
 *                     "committed" from the implicit commit condition, as a
 *                     paused or partitioned raft leader could. Participants
 *                     forget a committed transaction once no message to
 *                     them is in flight.
 *   BUG_*             planted bugs, listed in README.md
 */

#ifndef NP
#define NP 2
#endif
#ifndef MAXCRASH
#define MAXCRASH 2
#endif
#ifndef MAXLOSS
#define MAXLOSS 1
#endif
#ifndef MAXDUP
#define MAXDUP 1
#endif

/* ---- participant txn states (participant.go partState; 0 = not in p.txns) ---- */
#define P_NONE       0
#define P_PREPARING  1  /* RecPrepared appended, not durable: YES held back      */
#define P_PREPARED   2  /* YES sent; in doubt; inquires                          */
#define P_COMMITTING 3  /* RecCommitted appended, not durable: ack (one-phase:    */
                        /* YES and res.Commit) held back                          */
#define P_COMMITTED  4
#define P_ABORTED    5
#define P_READONLY   6
#define P_PREVENTING 7  /* STAGED: RecPrevented appended, not durable         */
#define P_PREVENTED  8  /* STAGED: will never prepare this id; answers PREV   */

/* ---- what the resource answers to Prepare ---- */
#define V_YES 1
#define V_NO  2
#define V_RO  3

/* ---- participant records ---- */
#define R_PREPARED    1  /* RecPrepared{Work}                  */
#define R_COMMITTED   2  /* RecCommitted                       */
#define R_ABORTED     3  /* RecAborted (not forced)            */
#define R_COMMITTED1P 4  /* RecCommitted{Work}: one-phase      */
#define R_PREVENTED   5  /* STAGED: RecPrevented (forced)      */

/* ---- messages coordinator -> participant i: bits of toP[i] ---- */
#define M_PREPARE 1      /* MsgPrepare (OnePhase iff NP == 1)  */
#define M_PREPARE2 8     /* MsgPrepare of the reuse: the same id, other work */
#define M_COMMIT  2      /* MsgDecision{Commit}                */
#define M_ABORT   4      /* MsgDecision{Abort}                 */
#define M_RESOLVE 16     /* STAGED: MsgResolve: prepared, or prevent */
/* ---- messages participant i -> coordinator: bits of toC[i] ---- */
#define M_YES 1          /* MsgVote{VoteYes}                   */
#define M_NO  2          /* MsgVote{VoteNo}                    */
#define M_RO  4          /* MsgVote{VoteReadOnly}              */
#define M_ACK 8          /* MsgAck                             */
#define M_INQ 16         /* MsgInquire                         */
#define M_PREV 32        /* STAGED: MsgVote{VotePrevented}: durably prevented */

/* ---- coordinator txn states (shard.go coordState; 0 = not in s.txns) ---- */
#define C_NONE       0
#define C_VOTING     1  /* prepares sent, collecting votes; nothing logged      */
#define C_DECIDING   2  /* RecCommit appended, not durable: reply and decisions */
                        /* held back                                            */
#define C_DELIVERING 3  /* RecCommit durable: commit redelivered until acked    */
#define C_ENDING     4  /* every ack in; RecEnd appended, not durable           */
#define C_COMMITTED  5  /* finished committed (also all read-only, one-phase)   */
#define C_ABORTED    6  /* finished aborted (never logged)                      */
#define C_UNKNOWN    7  /* finished: one-phase without an answer                */
#define C_ABORTING   8  /* STAGED: RecAbort appended, not durable: nothing told */

/* ---- what the client was told ---- */
#define O_NONE      0
#define O_COMMITTED 1
#define O_ABORTED   2
#define O_UNKNOWN   3

#if defined(BUG_STAGED_REPLY_EARLY) || defined(BUG_NO_REFUSE_AFTER_PREVENT) || \
    defined(BUG_STAGED_TIMEOUT_ABORT) || defined(BUG_INQUIRY_LATE_STAGED) || \
    defined(BUG_STAGED_RO) || defined(BUG_COMMIT_MSG_EARLY)
#ifndef STAGED
#define STAGED
#endif
#endif
#ifdef STAGED
#if NP < 2 || defined(REUSE)
#error STAGED needs NP >= 2 and no REUSE
#endif
typedef Log { byte rec[6]; byte n; byte d };
#define REC_END 3        /* records: 1 STAGED, 2 RecCommit or RecAbort, 3 RecEnd */
#define D_COMMIT 1
#define D_ABORT  2
#else
typedef Log { byte rec[4]; byte n; byte d };
#define REC_END 2        /* records: 1 RecCommit, 2 RecEnd */
#endif

/* participants */
byte pvote[NP];   /* resource's answer to Prepare (chosen at init)        */
byte pst[NP];     /* partTxn.state                                        */
byte pwait[NP];   /* index the held output waits for (partWait.index)     */
Log  plog[NP];

/* coordinator */
byte cst;         /* coordTxn.state                                       */
byte cvote[NP];   /* coordBranch.vote                                     */
byte cacked;      /* bitmask of coordBranch.acked                         */
byte cn, cd;      /* log: record 1 = RecCommit, record 2 = RecEnd; d = durable */
byte cparts;      /* RecCommit.Participants (bitmask of YES voters)       */
bit  creplied;    /* coordTxn.replied                                     */
byte reply;       /* what the client was told                             */

/* network */
byte toP[NP];
byte toC[NP];

#ifdef STAGED
byte cdec;        /* record 2: D_COMMIT (RecCommit) or D_ABORT (RecAbort)  */
bit  cres;        /* resolving: asks every branch without a vote to prepare-or-prevent */
bit  cimpl;       /* the decision is implicit: every vote YES (no read-only) */
bit  zst;         /* a deposed incarnation is still alive (zombie)          */
bit  zreplied;    /* ... and has answered its client                        */
byte zvote[NP];   /* ... and the votes it has seen                          */
bit  g_cabortlog; /* ghost: an abort decision of this id became durable     */
bit  g_stagedd;   /* ghost: STAGED has been durable (it stays so)           */
bit  zlive;       /* scratch: a zombie was just made                        */
bit  pforgot[NP]; /* ghost: participant i forgot a commit it applied        */
byte noRO;        /* scratch */
#endif

/* RETIRE: the group that owns the transaction is retired (docs/scale.md,
 * docs/protocol.md "Clusters of groups"): the operator publishes a map that
 * says so once the group is drained, its process stops for good, and a
 * participant that holds the transaction undecided aborts it. */
#if defined(BUG_RETIRE_NO_DRAIN) || defined(BUG_RETIRE_UNACKED)
#ifndef RETIRE
#define RETIRE
#endif
#endif
#ifdef RETIRE
#ifdef STAGED
#error "RETIRE is modelled for the classic protocol only"
#endif
bit retired;
#define CUP (!retired)      /* the coordinator still runs */
#else
#define CUP 1
#endif

/* budgets */
byte crashes;
#if defined(LIVE) || defined(NETBUDGET)
byte losses, dups;
#endif

#if (defined(BUG_ID_WINDOW) || defined(BUG_REUSE_YES)) && !defined(REUSE)
#define REUSE
#endif
#ifdef BUG_ID_WINDOW
#define REUSE_SETTLED 1
#else
/* no participant has a vote (or an ack) of the first use still to send */
#define SETTLED(i) (pst[i] != P_PREPARING && pst[i] != P_COMMITTING)
#if NP > 2
#define REUSE_SETTLED (SETTLED(0) && SETTLED(1) && SETTLED(2))
#else
#define REUSE_SETTLED (SETTLED(0) && SETTLED(1))
#endif
#endif

/* ghosts for the properties: never reset, not even by a crash. With
 * REUSE, entries NP.. are the reuse's (the second transaction under the
 * id): GI(i) is participant i's entry for the work it holds. */
#ifdef REUSE
#if NP < 2 || defined(LIVE)
#error REUSE needs NP >= 2 and a safety run
#endif
bit g_prepared[2*NP];  /* res.Prepare called: participant i voted pvote[i]   */
bit g_commit[2*NP];    /* res.Commit applied (live or on recovery)           */
bit g_abort[2*NP];     /* res.Abort applied, or voted NO (resource released) */
byte cinc = 1;     /* which transaction the coordinator runs under the id: 1, or 2 (the reuse) */
byte reply2;       /* what the reuse's client was told                     */
byte pwork[NP];    /* whose work participant i holds under the id: 1 or 2 (0 none) */
bit  prefused[NP]; /* partTxn.refused: a reuse was voted no while i held the first */
#define GI(i) ((i) + (pwork[i] == 2 -> NP : 0))
#define SAMEW(i, w) (pwork[i] == (w))
#define CI(i) ((i) + (cinc == 2 -> NP : 0))
#else
bit g_prepared[NP];  /* res.Prepare called: participant i voted pvote[i]     */
bit g_commit[NP];    /* res.Commit applied (live or on recovery)             */
bit g_abort[NP];     /* res.Abort applied, or voted NO (resource released)   */
#define GI(i) (i)
#define CI(i) (i)
#define SAMEW(i, w) 1
bit prefused[NP];  /* never set without REUSE */
#endif

/* scratch for loops: set and used inside one atomic step and reset to 0
 * at its end, so it never tells two states apart */
byte k, kk, anyC, anyA, allOK, votesIn, yesSet;
bit  got;

/* ================= network ================= */

#if defined(LIVE) || defined(NETBUDGET)
#define LOSE (losses < MAXLOSS) -> losses++
#define DUP  (dups < MAXDUP) -> dups++
#else
#define LOSE skip
#define DUP  skip
#endif

/* a send puts the message in flight; loss happens at delivery (RECV) */
inline sendP(i, m) { toP[i] = toP[i] | m }
inline sendC(i, m) { toC[i] = toC[i] | m }

/* deliver message m on channel ch[i] to a handler: the message leaves the
 * network; or a copy stays (a duplicate may come later); or it is lost.
 * (A macro: an inline cannot take an array name.) */
#define RECV(ch, i, m, handler) \
	if \
	:: ch[i] = ch[i] & (255 - m); got = 1 \
	:: DUP; got = 1 \
	:: LOSE; ch[i] = ch[i] & (255 - m) \
	fi; \
	if \
	:: got -> got = 0; handler \
	:: else \
	fi

/* ================= safety properties ================= */

inline checkSafety() {
	d_step {
		anyC = 0; anyA = 0; allOK = 1;
		for (k : 0 .. NP-1) {
			anyC = anyC | g_commit[k];
			anyA = anyA | g_abort[k];
			if
			:: !g_prepared[k] || pvote[k] == V_NO -> allOK = 0
			:: else
			fi
		};
		assert(!(anyC && anyA));                        /* ATOMICITY */
		assert(!(reply == O_COMMITTED && anyA));        /* DURABILITY: told committed, nobody aborts */
		assert(!(reply == O_ABORTED && anyC));          /* told aborted, nobody commits */
		assert(!((anyC || reply == O_COMMITTED) && !allOK)); /* VALIDITY */
#ifdef STAGED
		/* AGREEMENT: no commit anywhere (told or applied) once an abort
		 * decision is durable, in any incarnation */
		assert(!(g_cabortlog && (reply == O_COMMITTED || anyC)));
#endif
		k = 0; anyC = 0; anyA = 0; allOK = 0
	};
#ifdef REUSE
	/* the same four for the reuse, the second transaction under the id */
	d_step {
		anyC = 0; anyA = 0; allOK = 1;
		for (k : 0 .. NP-1) {
			anyC = anyC | g_commit[NP + k];
			anyA = anyA | g_abort[NP + k];
			if
			:: !g_prepared[NP + k] || pvote[k] == V_NO -> allOK = 0
			:: else
			fi
		};
		assert(!(anyC && anyA));                         /* ATOMICITY (reuse) */
		assert(!(reply2 == O_COMMITTED && anyA));        /* DURABILITY (reuse) */
		assert(!(reply2 == O_ABORTED && anyC));
		assert(!((anyC || reply2 == O_COMMITTED) && !allOK)); /* VALIDITY (reuse) */
		k = 0; anyC = 0; anyA = 0; allOK = 0
	}
#endif
}

/* ================= participant (participant.go) ================= */

inline pappend(i, r) {              /* appendRecord */
	plog[i].rec[plog[i].n] = r;
	plog[i].n++;
	pwait[i] = plog[i].n
}

inline applyCommit(i) { g_commit[GI(i)] = 1; printf("MSC: P%d commits\n", i); checkSafety() }
inline applyAbort(i)  { g_abort[GI(i)] = 1;  printf("MSC: P%d aborts\n", i);  checkSafety() }

/* Participant.prepare for the work of transaction w (1; with REUSE also
 * 2, the reuse): a prepare for an id the participant holds or has decided
 * is answered by prepareAgain */
#ifdef BUG_NO_REFUSE_AFTER_PREVENT
/* the bug: a prevented id prepares (once per participant, to keep the
 * log bounded) */
bit panew[NP];
#define PREPARE_ANEW(i) (pst[i] == P_PREVENTED && !panew[i])
#else
#define PREPARE_ANEW(i) 0
#endif
inline onPrepare(i, w) {
	if
	:: pst[i] == P_NONE || PREPARE_ANEW(i) ->
#ifdef BUG_NO_REFUSE_AFTER_PREVENT
		if :: pst[i] == P_PREVENTED -> panew[i] = 1 :: else fi;
#endif
#ifdef REUSE
		pwork[i] = w; prefused[i] = 0;
#endif
		g_prepared[GI(i)] = 1;
		if
		:: pvote[i] == V_NO ->
#ifdef STAGED
			/* staged: a no is a durable fact: RecPrevented is forced
			 * first (a volatile no, forgotten in a crash, could turn
			 * into a yes for a late copy of the prepare, and a deposed
			 * leader could count it) */
			applyAbort(i); pappend(i, R_PREVENTED); pst[i] = P_PREVENTING
#else
			pst[i] = P_ABORTED; applyAbort(i); sendC(i, M_NO)
#endif
		:: pvote[i] == V_RO ->
			pst[i] = P_READONLY; sendC(i, M_RO)
		:: pvote[i] == V_YES && NP == 1 ->      /* becomeCommitting, one-phase */
			pappend(i, R_COMMITTED1P); pst[i] = P_COMMITTING
		:: pvote[i] == V_YES && NP > 1 ->       /* becomePreparing */
			pappend(i, R_PREPARED); pst[i] = P_PREPARING
#ifdef BUG_VOTE_BEFORE_DURABLE
			; sendC(i, M_YES)
#endif
		fi
#ifdef REUSE
	/* another transaction's work under this id: a reuse (prepareAgain) */
	:: pst[i] != P_NONE && pwork[i] != w ->
#ifdef BUG_REUSE_YES
		/* the old code: answered like a copy of the first prepare */
		if
		:: pst[i] == P_PREPARED || pst[i] == P_COMMITTED -> sendC(i, M_YES)
		:: pst[i] == P_ABORTED  -> sendC(i, M_NO)
		:: pst[i] == P_READONLY -> sendC(i, M_RO)
		:: else -> skip
		fi
#else
		/* vote no; one in hand never sends its own YES any more */
		prefused[i] = 1; sendC(i, M_NO)
#endif
#endif
	/* never prepare twice: answer a copy from what was done */
	:: (pst[i] == P_PREPARING || pst[i] == P_COMMITTING) && SAMEW(i, w) ->
#ifdef BUG_DUP_PREPARE_FROM_MEMORY
		sendC(i, M_YES)     /* answered from memory, record not durable yet */
#else
		skip                /* the vote goes out when the record is durable */
#endif
	:: pst[i] == P_PREPARED && SAMEW(i, w) && prefused[i] -> sendC(i, M_NO)
	:: pst[i] == P_PREPARED && SAMEW(i, w) && !prefused[i] -> sendC(i, M_YES)
	/* committed: one-phase "committed" again; two-phase no (its
	 * coordinator is past voting; only a reuse could count a YES) */
	:: pst[i] == P_COMMITTED && SAMEW(i, w) && NP == 1 -> sendC(i, M_YES)
	:: pst[i] == P_COMMITTED && SAMEW(i, w) && NP > 1 ->
#ifdef BUG_REUSE_YES
		sendC(i, M_YES)
#else
		sendC(i, M_NO)
#endif
	:: pst[i] == P_ABORTED && SAMEW(i, w) -> sendC(i, M_NO)
	:: pst[i] == P_READONLY && SAMEW(i, w) -> sendC(i, M_RO)
#ifdef STAGED
	/* prevented: a late prepare is refused, for ever */
	:: pst[i] == P_PREVENTED && !PREPARE_ANEW(i) -> sendC(i, M_NO)
	:: pst[i] == P_PREVENTING -> skip    /* the no goes out when RecPrevented is durable */
#endif
	fi
}

#ifdef STAGED
/* Participant.resolve: the coordinator asks "prepared, or prevent it".
 * Prepared (durably: YES was or will be sent) answers YES; anything else
 * forces RecPrevented first, so that a prepare arriving later is refused,
 * and answers PREV once it is durable. */
inline onResolve(i) {
	if
	:: pst[i] == P_NONE || pst[i] == P_ABORTED || pst[i] == P_READONLY ->
		pappend(i, R_PREVENTED); pst[i] = P_PREVENTING
	:: pst[i] == P_PREVENTED -> sendC(i, M_PREV)
	:: pst[i] == P_PREPARED || pst[i] == P_COMMITTING || pst[i] == P_COMMITTED -> sendC(i, M_YES)
	:: else -> skip     /* preparing, preventing: answered when durable */
	fi
}
#endif

inline onCommit(i) {                /* Participant.commit */
	if
	:: pst[i] == P_NONE ->
		/* "a commit decision exists only if this participant voted YES
		 * durably ... it committed this one long ago": ack */
		sendC(i, M_ACK)
	:: pst[i] == P_PREPARED ->          /* becomeCommitting */
		/* early lock release: applied once appended; only the ack
		 * waits for the record to be durable */
		pappend(i, R_COMMITTED); pst[i] = P_COMMITTING; applyCommit(i)
#ifdef BUG_ACK_BEFORE_DURABLE
		; sendC(i, M_ACK)
#endif
	:: pst[i] == P_COMMITTED -> sendC(i, M_ACK)
	:: else -> skip     /* committing: ack when durable; others: invalid */
	fi
}

inline onAbort(i) {                 /* Participant.abort */
	if
	:: pst[i] == P_NONE -> pst[i] = P_ABORTED   /* overtook its prepare: remember */
	:: pst[i] == P_PREPARING || pst[i] == P_PREPARED ->
		pst[i] = P_ABORTED; applyAbort(i); pappend(i, R_ABORTED)
	:: else -> skip
	fi
}

/* Participant.Durable(n): what waited for the record goes out. Called in
 * the same step as the group commit: a crash between the two is the same
 * as a crash after both with the output lost in the network. */
inline pDurable(i) {
	if
	:: pst[i] == P_PREPARING && plog[i].d >= pwait[i] ->   /* becomePrepared */
		pst[i] = P_PREPARED
#ifndef BUG_VOTE_BEFORE_DURABLE
#ifdef REUSE
		; if :: !prefused[i] -> sendC(i, M_YES) :: else fi
#else
		; sendC(i, M_YES)
#endif
#endif
#ifdef STAGED
	:: pst[i] == P_PREVENTING && plog[i].d >= pwait[i] ->
		pst[i] = P_PREVENTED; sendC(i, M_PREV)
#endif
	:: pst[i] == P_COMMITTING && plog[i].d >= pwait[i] ->
		pst[i] = P_COMMITTED;
		if
		:: NP == 1 -> applyCommit(i); sendC(i, M_YES)  /* one-phase: YES = committed */
		:: else
#ifndef BUG_ACK_BEFORE_DURABLE
			; sendC(i, M_ACK)
#endif
		fi
	:: else
	fi
}

proctype Part(byte i) {
end:
	do
	:: atomic { (toP[i] & M_PREPARE) ->
		RECV(toP, i, M_PREPARE, printf("MSC: C->P%d prepare\n", i); onPrepare(i, 1)) }
#ifdef REUSE
	:: atomic { (toP[i] & M_PREPARE2) ->
		RECV(toP, i, M_PREPARE2, printf("MSC: C->P%d prepare (the reuse's work)\n", i); onPrepare(i, 2)) }
#endif
	:: atomic { (toP[i] & M_COMMIT) ->
		RECV(toP, i, M_COMMIT, printf("MSC: C->P%d commit\n", i); onCommit(i)) }
	:: atomic { (toP[i] & M_ABORT) ->
		RECV(toP, i, M_ABORT, printf("MSC: C->P%d abort\n", i); onAbort(i)) }
#ifdef STAGED
	:: atomic { (toP[i] & M_RESOLVE) ->
		RECV(toP, i, M_RESOLVE, printf("MSC: C->P%d resolve\n", i); onResolve(i)) }
	/* RememberTicks after a commit: forget it, its records checkpointed
	 * away. "No message outlives RememberTicks": none to it in flight. */
	:: atomic { pst[i] == P_COMMITTED && plog[i].d == plog[i].n && toP[i] == 0 ->
		printf("MSC: P%d forgets its commit\n", i);
		pst[i] = P_NONE; pforgot[i] = 1; pwait[i] = 0;
		d_step { for (k : 0 .. 5) { plog[i].rec[k] = 0 }; k = 0 };
		plog[i].n = 0; plog[i].d = 0 }
#endif
#ifdef FORGET_PART
	/* RememberTicks elapsed: forget a decided transaction (volatile only).
	 * The engine assumes no message outlives RememberTicks; the model's
	 * network does not, so this variant shows what the assumption buys. */
	:: atomic { (pst[i] == P_COMMITTED || pst[i] == P_ABORTED || pst[i] == P_READONLY) &&
		plog[i].n < 3 -> printf("MSC: P%d forgets\n", i); pst[i] = P_NONE }
#endif
#ifdef RETIRE
	/* the retired rule: the map says the transaction's group is retired,
	 * so it was drained (nothing in flight, every commit acknowledged):
	 * what is still undecided here was never committed; abort it */
	:: atomic { retired && (pst[i] == P_PREPARING || pst[i] == P_PREPARED) ->
		printf("MSC: P%d aborts: its group is retired\n", i);
		pst[i] = P_ABORTED; applyAbort(i); pappend(i, R_ABORTED) }
#endif
#ifdef BUG_SELF_ABORT
	/* a participant that gives up on its own after voting YES */
	:: atomic { pst[i] == P_PREPARED ->
		printf("MSC: P%d gives up\n", i);
		pst[i] = P_ABORTED; applyAbort(i); pappend(i, R_ABORTED) }
#endif
	od
}

/* crash participant i and restart it from what its log kept */
inline crashP(i) {
	/* every durable record survives, and any prefix of the others */
	do
	:: plog[i].n > plog[i].d -> plog[i].n--; plog[i].rec[plog[i].n] = 0
	:: break
	od;
	plog[i].d = plog[i].n;
	pwait[i] = 0;
	/* Participant.Restore, record by record, in log order */
	d_step {
		pst[i] = P_NONE;
		for (k : 0 .. plog[i].n - 1) {
			if
			:: plog[i].rec[k] == R_PREPARED -> pst[i] = P_PREPARED
			:: plog[i].rec[k] == R_COMMITTED || plog[i].rec[k] == R_COMMITTED1P -> pst[i] = P_COMMITTED
			:: plog[i].rec[k] == R_ABORTED -> pst[i] = P_ABORTED
#ifdef STAGED
			:: plog[i].rec[k] == R_PREVENTED -> pst[i] = P_PREVENTED
#endif
			fi
		};
		k = 0
	};
	printf("MSC: crash P%d (log keeps %d records)\n", i, plog[i].n);
	/* DURABILITY: a commit once applied is never undone by a crash. A
	 * two-phase commit applied before its record was durable may come
	 * back in doubt (prepared): it must then be committed again, which
	 * checkSafety enforces (an abort now would break ATOMICITY). */
#ifdef STAGED
	assert(!g_commit[GI(i)] || pst[i] == P_COMMITTED || pst[i] == P_PREPARED || pforgot[i]);
#else
	assert(!g_commit[GI(i)] || pst[i] == P_COMMITTED || NP > 1 && pst[i] == P_PREPARED);
#endif
	/* Restore replays the decision into the resource */
	if
	:: pst[i] == P_COMMITTED -> applyCommit(i)
	:: pst[i] == P_ABORTED -> applyAbort(i)
	:: else
	fi
}

/* ================= coordinator (shard.go) ================= */

inline creply(o) {                  /* Shard.reply */
	assert(!creplied);
	creplied = 1;
#ifdef REUSE
	if :: cinc == 2 -> reply2 = o :: else -> reply = o fi;
#else
	reply = o;
#endif
	printf("MSC: C->client outcome %d\n", o);
	checkSafety()
}

/* becomeAborted: reply, then abort to every branch that has not voted or
 * voted YES, best effort, once; nothing logged */
inline becomeAborted() {
	creply(O_ABORTED);
	d_step {
		for (kk : 0 .. NP-1) {
			if
			:: cvote[kk] == 0 || cvote[kk] == V_YES -> sendP(kk, M_ABORT)
			:: else
			fi
		};
		kk = 0
	};
	cst = C_ABORTED
}

inline sendCommits() {
	d_step {
		for (kk : 0 .. NP-1) {
			if
			:: cvote[kk] == V_YES && !(cacked & (1 << kk)) -> sendP(kk, M_COMMIT)
			:: else
			fi
		};
		kk = 0
	}
}

#ifndef STAGED
inline onVote(i, v) {               /* Shard.vote */
	if
	:: cst == C_NONE ->
		if
		:: v == V_YES -> sendP(i, M_ABORT)      /* presumeAbort */
		:: else
		fi
	:: cst == C_VOTING && cvote[i] == 0 ->
		cvote[i] = v;
		if
		:: NP == 1 && v == V_NO -> becomeAborted()
		:: NP == 1 && v != V_NO -> creply(O_COMMITTED); cst = C_COMMITTED
		:: NP > 1 && v == V_NO -> becomeAborted()
		:: NP > 1 && v != V_NO ->
			d_step {
				votesIn = 1; yesSet = 0;
				for (kk : 0 .. NP-1) {
					if
					:: cvote[kk] == 0 -> votesIn = 0
					:: cvote[kk] == V_YES -> yesSet = yesSet | (1 << kk)
					:: else
					fi
				};
				kk = 0
			};
			if
			:: votesIn && yesSet == 0 ->        /* decide: all read-only */
				creply(O_COMMITTED); cst = C_COMMITTED
			:: votesIn && yesSet != 0 ->        /* decide: becomeDeciding */
				cst = C_DECIDING; cparts = yesSet; cn = 1  /* append RecCommit */
#ifdef BUG_DECIDE_BEFORE_DURABLE
				; creply(O_COMMITTED); sendCommits()
#endif
			:: else
			fi;
			votesIn = 0; yesSet = 0
		fi
	:: cst == C_ABORTED && v == V_YES -> sendP(i, M_ABORT)  /* late YES: tell it */
	:: else -> skip                         /* duplicate or late: ignored */
	fi
}

#else
/* Staged: an abort decision after STAGED is logged (RecAbort, record 2)
 * and told to nobody before it is durable: an unlogged abort could be
 * undone by a resolution after a crash. */
inline stagedAbort() {
	cst = C_ABORTING; cdec = D_ABORT; cn = 2
}

/* RecAbort is durable: tell the client, if it is still there, and abort
 * every branch that has not voted no */
inline stagedAborted() {
	g_cabortlog = 1;
	if
	:: !creplied -> creply(O_ABORTED)
	:: else -> checkSafety()
	fi;
	d_step {
		for (kk : 0 .. NP-1) {
			if
			:: cvote[kk] == 0 || cvote[kk] == V_YES -> sendP(kk, M_ABORT)
			:: else
			fi
		};
		kk = 0
	};
	cst = C_ABORTED
}

/* "committed" is told when the decision is implicit (every vote YES:
 * every branch durably prepared) and STAGED is durable, or when RecCommit
 * is durable (a read-only vote: that branch holds nothing and could be
 * prevented by a resolution, so only the explicit record decides). */
#ifdef BUG_STAGED_REPLY_EARLY
#define IMPLICIT_OK (cimpl)                /* the bug: STAGED not yet durable */
#else
#define IMPLICIT_OK (cimpl && cd >= 1)
#endif
inline stagedReply() {
	if
	:: !creplied && cst == C_DECIDING && (IMPLICIT_OK || cd >= 2) -> creply(O_COMMITTED)
	:: else
	fi
}

inline onVote(i, v) {               /* Shard.vote, staged */
	if
	:: cst == C_NONE ->
		if
		:: v == V_YES -> sendP(i, M_ABORT)      /* presumeAbort */
		:: else
		fi
	:: cst == C_VOTING && cvote[i] == 0 ->
		cvote[i] = v;
		if
		:: v == V_NO -> stagedAbort()          /* a no, or prevented */
		:: else ->
			d_step {
				votesIn = 1; yesSet = 0; noRO = 1;
				for (kk : 0 .. NP-1) {
					if
					:: cvote[kk] == 0 -> votesIn = 0
					:: cvote[kk] == V_YES -> yesSet = yesSet | (1 << kk)
					:: cvote[kk] == V_RO -> noRO = 0
					:: else
					fi
				};
				kk = 0
			};
			if
			:: votesIn ->                      /* decide commit: append RecCommit */
				cst = C_DECIDING; cparts = yesSet; cdec = D_COMMIT; cn = 2;
#ifdef BUG_STAGED_RO
				cimpl = (yesSet != 0);          /* the bug: read-only votes count as prepared */
#else
				cimpl = noRO;
#endif
#ifdef BUG_COMMIT_MSG_EARLY
				sendCommits();                  /* the bug: phase two before RecCommit is durable */
#endif
				stagedReply()
			:: else
			fi;
			votesIn = 0; yesSet = 0; noRO = 0
		fi
	:: cst == C_ABORTED && v == V_YES -> sendP(i, M_ABORT)  /* late YES: tell it */
	:: else -> skip                         /* duplicate or late: ignored */
	fi
}

#endif

inline onAck(i) {                   /* Shard.ack */
	if
	:: cst == C_DELIVERING && cvote[i] == V_YES && !(cacked & (1 << i)) ->
		cacked = cacked | (1 << i);
		if
		:: cacked == cparts ->          /* becomeEnding */
			/* DURABILITY: the commit is complete only when every YES
			 * voter has really committed */
			d_step {
				for (kk : 0 .. NP-1) {
					assert(!(cparts & (1 << kk)) || g_commit[CI(kk)])
				};
				kk = 0
			};
			cst = C_ENDING; cn = REC_END  /* append RecEnd (not forced) */
		:: else
		fi
	:: else -> skip
	fi
}

#ifndef STAGED
inline onInquire(i) {               /* Shard.inquire */
	if
	:: cst == C_NONE || cst == C_ABORTED -> sendP(i, M_ABORT)  /* presumeAbort / aborted */
	:: cst == C_VOTING -> skip          /* deferred: the decision will be sent */
	:: cst == C_DECIDING ->
#ifdef BUG_INQUIRY_ABORT_PENDING
		sendP(i, M_ABORT)               /* "no durable decision": presumed abort */
#else
		skip                            /* deferred: commit goes out when durable */
#endif
	:: (cst == C_DELIVERING || cst == C_ENDING || cst == C_COMMITTED) && cvote[i] == V_YES ->
		sendP(i, M_COMMIT)
	:: else -> skip                     /* invalid: ignored */
	fi
}

#else
inline onInquire(i) {               /* Shard.inquire, staged */
	if
	:: cst == C_NONE || cst == C_ABORTED -> sendP(i, M_ABORT)  /* no STAGED can still become durable */
	:: cst == C_VOTING ->
#ifdef BUG_INQUIRY_LATE_STAGED
		/* the bug: "no durable STAGED" taken for "no STAGED" */
		if
		:: cd < 1 -> sendP(i, M_ABORT)
		:: else
		fi
#else
		skip                            /* deferred: the vote or the resolution decides */
#endif
	:: cst == C_DECIDING || cst == C_ABORTING -> skip   /* deferred until durable */
	:: (cst == C_DELIVERING || cst == C_ENDING || cst == C_COMMITTED) && cvote[i] == V_YES ->
		sendP(i, M_COMMIT)
	:: else -> skip
	fi
}

#endif

/* the coordinator's side of participant i's connection */
proctype CoordLink(byte i) {
end:
	do
	:: atomic { CUP && (toC[i] & M_YES) ->
		RECV(toC, i, M_YES, printf("MSC: P%d->C yes\n", i); onVote(i, V_YES)) }
	:: atomic { CUP && (toC[i] & M_NO) ->
		RECV(toC, i, M_NO, printf("MSC: P%d->C no\n", i); onVote(i, V_NO)) }
	:: atomic { CUP && (toC[i] & M_RO) ->
		RECV(toC, i, M_RO, printf("MSC: P%d->C read-only\n", i); onVote(i, V_RO)) }
	:: atomic { CUP && (toC[i] & M_ACK) ->
		RECV(toC, i, M_ACK, printf("MSC: P%d->C ack\n", i); onAck(i)) }
	:: atomic { CUP && (toC[i] & M_INQ) ->
		RECV(toC, i, M_INQ, printf("MSC: P%d->C inquire\n", i); onInquire(i)) }
#ifdef STAGED
	:: atomic { (toC[i] & M_PREV) ->
		RECV(toC, i, M_PREV, printf("MSC: P%d->C prevented\n", i); onVote(i, V_NO)) }
#endif
	od
}

#ifndef STAGED
/* Shard.Durable(n), in the same step as the group commit */
inline cDurable() {
	if
	:: cst == C_DECIDING && cd >= 1 ->      /* becomeDelivering */
		cst = C_DELIVERING;
		if
		:: !creplied -> creply(O_COMMITTED); sendCommits()
		:: else
		fi
	:: cst == C_ENDING && cd >= 2 -> cst = C_COMMITTED   /* becomeFinished */
	:: else
	fi
}

#else
/* Shard.Durable(n), staged */
inline cDurable() {
	if
	:: cst == C_DECIDING ->
		stagedReply();
		if
		:: cd >= 2 ->                       /* RecCommit durable: phase two */
			cst = C_DELIVERING; sendCommits();
			if
			:: cparts == 0 -> cst = C_ENDING; cn = REC_END   /* all read-only */
			:: else
			fi
		:: else
		fi
	:: cst == C_ABORTING && cd >= 2 -> stagedAborted()
	:: cst == C_ENDING && cd >= REC_END -> cst = C_COMMITTED
	:: else
	fi
}

#endif

proctype Coord() {
end:
	do
#ifndef STAGED
	/* prepare timeout (Shard.timeout), only while a vote is missing */
	:: atomic { CUP && cst == C_VOTING ->
		d_step {
			votesIn = 1;
			for (kk : 0 .. NP-1) {
				if
				:: cvote[kk] == 0 -> votesIn = 0
				:: else
				fi
			};
			kk = 0
		};
		if
		:: !votesIn ->
			printf("MSC: C prepare timeout\n");
			if
			:: NP == 1 -> creply(O_UNKNOWN); cst = C_UNKNOWN   /* never guess */
			:: else -> becomeAborted()
			fi
		:: else
		fi;
		votesIn = 0 }
#else
	/* prepare timeout, staged: never an abort on its own; resolution
	 * asks every branch without a vote to prepare-or-prevent */
#ifdef BUG_STAGED_TIMEOUT_ABORT
	:: atomic { cst == C_VOTING ->
#else
	:: atomic { cst == C_VOTING && !cres ->
#endif
		d_step {
			votesIn = 1;
			for (kk : 0 .. NP-1) {
				if
				:: cvote[kk] == 0 -> votesIn = 0
				:: else
				fi
			};
			kk = 0
		};
		if
		:: !votesIn ->
			printf("MSC: C prepare timeout\n");
#ifdef BUG_STAGED_TIMEOUT_ABORT
			stagedAbort()                   /* the bug: a logged abort, nobody prevented */
#else
			cres = 1
#endif
		:: else
		fi;
		votesIn = 0 }
#endif
	/* RememberTicks after finishing: release */
	:: atomic { CUP && (cst == C_COMMITTED || cst == C_ABORTED || cst == C_UNKNOWN) ->
		printf("MSC: C forgets\n");
		cst = C_NONE; cacked = 0;
#ifdef STAGED
		cres = 0; cimpl = 0;
#endif
		d_step { for (kk : 0 .. NP-1) { cvote[kk] = 0 }; kk = 0 } }
#if defined(REUSE) || defined(BUG_ID_WINDOW)
	/* The client begins the id again, for other work at every
	 * participant, and the coordinator, which has forgotten it, starts
	 * it (Shard.begin). The messages of the first use are gone (none
	 * outlives RememberTicks; a crashed coordinator's connections were
	 * reset). With REUSE no participant still has a vote of the first
	 * use to send (PREPARING, COMMITTING): the participants' rule cannot
	 * stop one, and the id window is there to refuse such a reuse.
	 * BUG_ID_WINDOW: a coordinator without the window, which starts it
	 * anyway. */
	:: atomic { cinc == 1 && cst == C_NONE && REUSE_SETTLED ->
		printf("MSC: client begins the id again, other work\n");
		cinc = 2; cst = C_VOTING; creplied = 0; cacked = 0; cparts = 0; cn = 0; cd = 0;
		d_step { for (kk : 0 .. NP-1) { cvote[kk] = 0; toP[kk] = M_PREPARE2; toC[kk] = 0 }; kk = 0 } }
#endif
	od
}

#ifndef STAGED
/* crash the coordinator and restart it from what its log kept */
inline crashC() {
	do
	:: cn > cd -> cn--
	:: break
	od;
	cd = cn;
	cacked = 0;
	creplied = 1;                       /* the client is gone with the process */
	d_step { for (kk : 0 .. NP-1) { cvote[kk] = 0 }; kk = 0 };
	cst = C_NONE;
#ifndef BUG_NO_REREAD
	/* Shard.Restore: RecCommit -> delivering (branches = its participants,
	 * all YES); RecEnd -> committed. Once End is durable LowWater passes
	 * RecCommit, so the records may also be gone already. */
	if
	:: cn >= 1 ->
		d_step {
			for (kk : 0 .. NP-1) {
				if
				:: cparts & (1 << kk) -> cvote[kk] = V_YES
				:: else
				fi
			};
			kk = 0
		};
		if
		:: cn == 1 -> cst = C_DELIVERING
		:: cn == 2 -> cst = C_COMMITTED
		:: cn == 2 -> cst = C_NONE; cn = 0; cd = 0   /* log recycled past it */
		fi
	:: else
	fi;
#endif
	if
	:: cn == 0 -> cparts = 0
	:: else
	fi;
	printf("MSC: crash C (log keeps %d records)\n", cn)
}

#else
/* crash the coordinator and restart it from what its log kept, staged */
inline crashC() {
#ifndef LIVE
	/* A deposed leader may live on (paused, partitioned): it keeps the
	 * votes it has and its client, and may still say "committed" from the
	 * implicit condition; it can make nothing durable any more. */
	if
	:: zst == 0 && !creplied && (cst == C_VOTING || cst == C_DECIDING && cimpl) ->
		if
		:: zst = 1; zreplied = 0;
			d_step { for (kk : 0 .. NP-1) { zvote[kk] = cvote[kk] }; kk = 0 };
			printf("MSC: C lives on, deposed\n");
			zlive = 1
		:: skip
		fi
	:: else
	fi;
#endif
	do
	:: cn > cd -> cn--
	:: break
	od;
	cd = cn;
	cacked = 0; creplied = 1; cres = 0; cimpl = 0;
	d_step { for (kk : 0 .. NP-1) { cvote[kk] = 0 }; kk = 0 };
	cst = C_NONE;
	if
	:: cn < 2 -> cdec = 0; cparts = 0
	:: else
	fi;
	/* Shard.Restore, staged */
	if
	:: cn == 1 -> cst = C_VOTING; cres = 1  /* STAGED without a decision: resolution */
	:: cn >= 2 && cdec == D_ABORT ->
		if
		:: cst = C_ABORTED
		:: cst = C_NONE; cn = 0; cd = 0; cdec = 0   /* log recycled past it */
		fi
	:: cn == 2 && cdec == D_COMMIT ->
		d_step {
			for (kk : 0 .. NP-1) {
				if
				:: cparts & (1 << kk) -> cvote[kk] = V_YES
				:: else
				fi
			};
			kk = 0
		};
		if
		:: cparts == 0 -> cst = C_ENDING; cn = REC_END
		:: else -> cst = C_DELIVERING
		fi
	:: cn == REC_END ->
		if
		:: cst = C_COMMITTED
		:: cst = C_NONE; cn = 0; cd = 0; cdec = 0; cparts = 0
		fi
	:: else
	fi;
	printf("MSC: crash C (log keeps %d records)\n", cn);
#ifndef LIVE
	if
	:: zlive -> zlive = 0; zcheck()
	:: else
	fi
#endif
}

/* the deposed incarnation: collects YES votes meant for it (or for the new
 * one: either way a true "durably prepared") and tells its client
 * "committed" as soon as every vote is YES and STAGED has been durable (it
 * may learn that by applying the log as a follower). It lives on for
 * ever: one that stops only does less. Telling the client at the first
 * moment it may is the strongest check: every later step is checked
 * against that reply. */
inline zcheck() {
	d_step {
		votesIn = 1;
		for (kk : 0 .. NP-1) {
			if
			:: zvote[kk] != V_YES -> votesIn = 0
			:: else
			fi
		};
		kk = 0
	};
	if
	:: votesIn && !zreplied && g_stagedd && reply == O_NONE ->
		zreplied = 1; reply = O_COMMITTED;
		printf("MSC: deposed C->client committed\n");
		checkSafety()
	:: else
	fi;
	votesIn = 0
}

proctype Zombie() {
end:
	do
	:: atomic { zst && (toC[0] & M_YES) -> RECV(toC, 0, M_YES, zvote[0] = V_YES; zcheck()) }
	:: atomic { zst && (toC[1] & M_YES) -> RECV(toC, 1, M_YES, zvote[1] = V_YES; zcheck()) }
#if NP > 2
	:: atomic { zst && (toC[2] & M_YES) -> RECV(toC, 2, M_YES, zvote[2] = V_YES; zcheck()) }
#endif
	od
}

#endif

/* ================= timers =================
 * Each timer is its own process, so that weak fairness (process level in
 * SPIN) cannot let a busy timer starve the delivery of a message. */

/* participant i in doubt: inquire (at start, after InquireAfter, then with
 * backoff up to InquireMax, for ever) */
proctype InquiryTimer(byte i) {
end:
	do
#ifndef BUG_NO_INQUIRY
#if defined(STAGED) && defined(LIVE)
	/* A resolution has no timeout (a classic coordinator's decides): in
	 * a liveness run an inquiry waits while this participant's own
	 * answer is in flight, standing in for FIFO links — SPIN's weak
	 * fairness is per process, so the link could otherwise take the
	 * inquiry, which a resolving coordinator defers, for ever. */
	:: atomic { pst[i] == P_PREPARED && !(toC[i] & (M_INQ | M_YES)) ->
#else
	:: atomic { pst[i] == P_PREPARED && !(toC[i] & M_INQ) ->
#endif
		printf("MSC: P%d inquires\n", i); sendC(i, M_INQ) }
#else
	:: false    /* a participant that waits for the decision and never asks */
#endif
	od
}

/* commit redelivery to participant i (start() after a restore, then
 * RedeliverMin doubling up to RedeliverMax) until it acks */
proctype RedeliveryTimer(byte i) {
end:
	do
	:: atomic { CUP && cst == C_DELIVERING && cvote[i] == V_YES && (cacked & (1 << i)) == 0 &&
		(toP[i] & M_COMMIT) == 0 -> printf("MSC: C redelivers to P%d\n", i); sendP(i, M_COMMIT) }
#ifdef STAGED
	/* resolution: ask again until it answers */
	:: atomic { cst == C_VOTING && cres && cvote[i] == 0 && (toP[i] & M_RESOLVE) == 0 ->
		printf("MSC: C asks P%d to resolve\n", i); sendP(i, M_RESOLVE) }
#endif
	od
}

/* ================= environment ================= */

/* the coordinator's WAL: a group commit makes every appended record durable */
proctype DiskC() {
end:
	do
#ifdef STAGED
	:: atomic { cn > cd -> cd = cn; g_stagedd = 1; cDurable() }
#else
	:: atomic { CUP && cn > cd -> cd = cn; cDurable() }
#endif
	od
}

proctype DiskP(byte i) {
end:
	do
	:: atomic { plog[i].n > plog[i].d -> plog[i].d = plog[i].n; pDurable(i) }
	od
}

proctype Crasher() {
end:
	do
	:: atomic { CUP && crashes < MAXCRASH -> crashes++; crashC() }
	:: atomic { crashes < MAXCRASH -> crashes++; crashP(0) }
#if NP > 1
	:: atomic { crashes < MAXCRASH -> crashes++; crashP(1) }
#endif
#if NP > 2
	:: atomic { crashes < MAXCRASH -> crashes++; crashP(2) }
#endif
	od
}

#ifdef RETIRE
/* The operator retires the group once `admin status` shows it drained:
 * no transaction in flight (voting, deciding: the client not yet
 * answered) and no commit unacknowledged (delivering). Ending (every ack
 * in, RecEnd not yet durable), finished and forgotten are drained. The
 * group takes no new transaction (the map drains it first), so the check
 * cannot be overtaken by a begin. BUG_RETIRE_NO_DRAIN retires at any
 * moment; BUG_RETIRE_UNACKED checks only that no client waits, skipping
 * the unacknowledged commits. */
#if defined(BUG_RETIRE_NO_DRAIN)
#define DRAINED 1
#elif defined(BUG_RETIRE_UNACKED)
#define DRAINED (cst != C_VOTING && cst != C_DECIDING)
#else
#define DRAINED (cst != C_VOTING && cst != C_DECIDING && cst != C_DELIVERING)
#endif
proctype Operator() {
end:
	do
	:: atomic { !retired && DRAINED -> retired = 1; printf("MSC: the group is retired (C stops)\n") }
	od
}
#endif

init {
	atomic {
		/* what each resource will answer */
		if :: pvote[0] = V_YES :: pvote[0] = V_NO :: pvote[0] = V_RO fi;
#if NP > 1
		if :: pvote[1] = V_YES :: pvote[1] = V_NO :: pvote[1] = V_RO fi;
#endif
#if NP > 2
		if :: pvote[2] = V_YES :: pvote[2] = V_NO :: pvote[2] = V_RO fi;
#endif
		/* Shard.begin: becomeVoting, a prepare to every branch */
		cst = C_VOTING;
#ifdef STAGED
		cn = 1;                         /* STAGED appended with the prepares */
#ifndef LIVE
		run Zombie();
#endif
#endif
		d_step { for (k : 0 .. NP-1) { sendP(k, M_PREPARE) }; k = 0 };
		run Coord();
#ifdef RETIRE
		run Operator();
#endif
		run DiskC();
		run Crasher();
		run CoordLink(0); run Part(0); run DiskP(0);
		run InquiryTimer(0); run RedeliveryTimer(0);
#if NP > 1
		run CoordLink(1); run Part(1); run DiskP(1);
		run InquiryTimer(1); run RedeliveryTimer(1);
#endif
#if NP > 2
		run CoordLink(2); run Part(2); run DiskP(2);
		run InquiryTimer(2); run RedeliveryTimer(2);
#endif
	}
}

#ifdef LIVE
/* TERMINATION: a participant in doubt eventually learns the outcome.
 * DURABILITY (liveness half): once the client is told "committed", every
 * participant whose resource voted YES eventually commits. */
#define indoubt(i)  (pst[i] == P_PREPARED)
#ifdef STAGED
/* a participant forgets a commit it applied: done all the same */
#define decided(i)  (pst[i] == P_COMMITTED || pst[i] == P_ABORTED || pforgot[i])
#define yesdone(i)  (pvote[i] != V_YES || pst[i] == P_COMMITTED || pforgot[i])
#else
#define decided(i)  (pst[i] == P_COMMITTED || pst[i] == P_ABORTED)
#define yesdone(i)  (pvote[i] != V_YES || pst[i] == P_COMMITTED)
#endif
#if NP == 1
#define TERM   ([] (indoubt(0) -> <> decided(0)))
#define ALLYES (yesdone(0))
#elif NP == 2
#define TERM   ([] (indoubt(0) -> <> decided(0)) && [] (indoubt(1) -> <> decided(1)))
#define ALLYES (yesdone(0) && yesdone(1))
#else
#define TERM   ([] (indoubt(0) -> <> decided(0)) && [] (indoubt(1) -> <> decided(1)) && [] (indoubt(2) -> <> decided(2)))
#define ALLYES (yesdone(0) && yesdone(1) && yesdone(2))
#endif
ltl live { TERM && [] (reply == O_COMMITTED -> <> ALLYES) }
#endif
