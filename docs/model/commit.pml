/*
 * commit.pml -- a SPIN model of commitd's presumed-abort two-phase commit
 * (engine.Shard = coordinator, engine.Participant = participant).
 *
 * One transaction, NP participants (NP == 1 is one-phase commit). The README
 * next to this file maps every process, message and variable to the Go code.
 *
 * Abstractions (why they are sound for one transaction):
 *  - The network is a SET of messages per direction and participant: a bit
 *    per message kind. With one transaction every copy of a message kind is
 *    identical, so a set captures loss (a send may be dropped), duplication
 *    (a delivery may leave the bit set), reordering and arbitrary delay. Bits
 *    survive a crash of the sender: in-flight messages may still arrive.
 *  - Timers (prepare timeout, inquiry, commit redelivery) are nondeterministic
 *    and may fire at any moment their precondition holds. A retransmission is
 *    only enabled when the same message is not already in flight (a resend of
 *    an in-flight message adds nothing a duplicate does not already give).
 *  - A log is an array of records plus n (appended) and d (durable). The disk
 *    makes everything appended durable at once (one group commit). A crash
 *    keeps every durable record and any prefix of the not-yet-durable ones,
 *    then the node restarts at once, restoring from what it kept.
 *  - RememberTicks: the coordinator may forget a finished transaction at any
 *    time. Participants remember what they decided until they crash (the
 *    model does not let a participant forget: see README, "Assumptions").
 *
 * Build options (spin -D...):
 *   NP=n              participants (1, 2 or 3)
 *   MAXCRASH=n        total crashes allowed (any node)
 *   LIVE              liveness run: bounded loss/duplication, LTL claim
 *   MAXLOSS, MAXDUP   budgets for LIVE
 *   BUG_*             planted bugs (see README)
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

/* ---- participant volatile states (engine: participant txn states) ---- */
#define P_UNKNOWN     0  /* nothing known about the txn                     */
#define P_PREP_WAIT   1  /* RecPrepared appended; YES held until durable    */
#define P_PREPARED    2  /* voted YES, in doubt                             */
#define P_COMMIT_WAIT 3  /* RecCommitted appended; ack held until durable   */
#define P_COMMITTED   4
#define P_ABORTED     5
#define P_READONLY    6  /* voted read-only, nothing held                   */
#define P_1PC_WAIT    7  /* one-phase: RecCommitted{Work} appended; YES held */

/* ---- what the resource answers to Prepare (fixed per participant) ---- */
#define V_YES 1
#define V_NO  2
#define V_RO  3

/* ---- participant log records ---- */
#define R_PREPARED    1
#define R_COMMITTED   2
#define R_ABORTED     3
#define R_COMMITTED1P 4  /* RecCommitted with Work: one-phase commit */

/* ---- messages coordinator -> participant i (bits of toP[i]) ---- */
#define M_PREPARE 1
#define M_COMMIT  2
#define M_ABORT   4
/* ---- messages participant i -> coordinator (bits of toC[i]) ---- */
#define M_YES 1
#define M_NO  2
#define M_RO  4
#define M_ACK 8
#define M_INQ 16

/* ---- coordinator volatile states ---- */
#define C_UNKNOWN    0  /* nothing known: presumed abort                     */
#define C_COLLECT    1  /* prepares sent, collecting votes                   */
#define C_COMMITTING 2  /* RecCommit appended, not yet durable               */
#define C_COMMITTED  3  /* RecCommit durable: deliver until every ack        */
#define C_ENDED      4  /* every ack in, RecEnd appended (not forced)        */
#define C_ABORTED    5
#define C_DONE       6  /* all read-only, or one-phase answered              */

/* ---- what the client was told ---- */
#define O_NONE      0
#define O_COMMITTED 1
#define O_ABORTED   2
#define O_UNKNOWN   3

typedef Log { byte rec[2]; byte n; byte d };

/* participants */
byte pvote[NP];            /* resource's answer to Prepare (chosen at init)   */
byte pst[NP];              /* volatile state                                  */
byte pwait[NP];            /* index the held output waits for                 */
Log  plog[NP];

/* coordinator */
byte cst;                  /* volatile state                                  */
byte cvote[NP];            /* votes received (volatile)                       */
byte cacked;               /* bitmask of acks received (volatile)             */
byte cn, cd;               /* log: record 1 = RecCommit, record 2 = RecEnd    */
byte cparts;               /* RecCommit.Participants: bitmask of YES voters   */
byte reply;                /* what the client was told (first reply)          */

/* network */
byte toP[NP];
byte toC[NP];

/* budgets */
byte crashes;
#ifdef LIVE
byte losses, dups;
#endif

/* ghosts for the properties (never reset by a crash) */
bit g_prepared[NP];        /* Prepare executed (the vote is pvote[i])          */
bit g_commit[NP];          /* resource committed                               */
bit g_abort[NP];           /* resource aborted (includes voting NO)            */

/* scratch for loops, used only inside d_step (one indivisible transition,
 * never backtracked into), so it need not be part of the state */
hidden byte k, kk, anyC, anyA, allOK, votesIn, yesSet;

/* ================= network ================= */

#ifdef LIVE
#define LOSE (losses < MAXLOSS) -> losses++
#define DUP  (dups < MAXDUP) -> dups++
#else
#define LOSE skip
#define DUP  skip
#endif

/* send: the message is in flight. Sends are deterministic; loss happens
 * at delivery (below), which is the same as loss in flight. */
inline sendP(i, m) { toP[i] = toP[i] | m }
inline sendC(i, m) { toC[i] = toC[i] | m }

/* delivery of message m to its receiver, which runs handler: the message
 * leaves the network; or a copy stays behind (a duplicate may come later);
 * or it is lost. (Macros, because an inline cannot take an array name.) */
#define RECV(ch, i, m, handler) \
	if \
	:: ch[i] = ch[i] & (255 - m); handler \
	:: DUP; handler \
	:: LOSE; ch[i] = ch[i] & (255 - m) \
	fi

/* ================= properties ================= */

inline checkSafety() {
	anyC = 0; anyA = 0; allOK = 1;
	d_step { for (k : 0 .. NP-1) {
		anyC = anyC | g_commit[k];
		anyA = anyA | g_abort[k];
		if
		:: !g_prepared[k] || pvote[k] == V_NO -> allOK = 0
		:: else
		fi
	}; k = 0 }
	assert(!(anyC && anyA));                     /* atomicity */
	assert(!(reply == O_COMMITTED && anyA));     /* durability: told committed, never aborted */
	assert(!(reply == O_ABORTED && anyC));       /* told aborted, nothing commits */
	assert(!((anyC || reply == O_COMMITTED) && !allOK)); /* validity */
}

/* ================= logs ================= */

inline pappend(i, r) {
	plog[i].rec[plog[i].n] = r;
	plog[i].n++;
	pwait[i] = plog[i].n
}

/* ================= participant ================= */

inline pSendYes(i) { sendC(i, M_YES) }

inline applyCommit(i) { g_commit[i] = 1; printf("MSC: P%d commits\n", i); checkSafety() }
inline applyAbort(i)  { g_abort[i] = 1;  printf("MSC: P%d aborts\n", i);  checkSafety() }

inline onPrepare(i) {
	if
	:: pst[i] == P_UNKNOWN ->
		g_prepared[i] = 1;
		if
		:: pvote[i] == V_NO ->
			pst[i] = P_ABORTED; applyAbort(i); sendC(i, M_NO)
		:: pvote[i] == V_RO ->
			pst[i] = P_READONLY; sendC(i, M_RO)
		:: pvote[i] == V_YES && NP == 1 ->
			pappend(i, R_COMMITTED1P); pst[i] = P_1PC_WAIT
#ifdef BUG_VOTE_BEFORE_DURABLE
			; pSendYes(i)
#endif
		:: pvote[i] == V_YES && NP > 1 ->
			pappend(i, R_PREPARED); pst[i] = P_PREP_WAIT
#ifdef BUG_VOTE_BEFORE_DURABLE
			; pSendYes(i)
#endif
		fi
	:: pst[i] == P_PREP_WAIT || pst[i] == P_1PC_WAIT ->
#ifdef BUG_DUP_PREPARE_FROM_MEMORY
		pSendYes(i)        /* answered from memory: record not durable yet */
#else
		skip               /* the held YES goes out once the record is durable */
#endif
	:: pst[i] == P_PREPARED || pst[i] == P_COMMIT_WAIT || pst[i] == P_COMMITTED ->
		pSendYes(i)
	:: pst[i] == P_ABORTED  -> sendC(i, M_NO)
	:: pst[i] == P_READONLY -> sendC(i, M_RO)
	fi
}

inline onCommit(i) {
	if
	:: pst[i] == P_PREPARED || pst[i] == P_PREP_WAIT ->
		pappend(i, R_COMMITTED); pst[i] = P_COMMIT_WAIT
	:: pst[i] == P_COMMIT_WAIT ->
#ifdef BUG_ACK_BEFORE_DURABLE
		sendC(i, M_ACK)  /* duplicate decision acked from memory */
#else
		skip                 /* the held ack goes out once durable */
#endif
	:: pst[i] == P_COMMITTED -> sendC(i, M_ACK)
	:: pst[i] == P_UNKNOWN ->
		/* spec: a commit decision exists only if it voted YES durably,
		 * so it must have committed and forgotten: ack */
		sendC(i, M_ACK)
	:: else -> skip          /* aborted / read-only / one-phase: ignored */
	fi
}

inline onAbort(i) {
	if
	:: pst[i] == P_PREPARED || pst[i] == P_PREP_WAIT ->
		pst[i] = P_ABORTED; applyAbort(i); pappend(i, R_ABORTED) /* not forced */
	:: else -> skip
	fi
}

proctype Part(byte i) {
end:
	do
	:: atomic { (toP[i] & M_PREPARE) -> RECV(toP, i, M_PREPARE, printf("MSC: C->P%d prepare\n", i); onPrepare(i)) }
	:: atomic { (toP[i] & M_COMMIT) -> RECV(toP, i, M_COMMIT, printf("MSC: C->P%d commit\n", i); onCommit(i)) }
	:: atomic { (toP[i] & M_ABORT) -> RECV(toP, i, M_ABORT, printf("MSC: C->P%d abort\n", i); onAbort(i)) }
	/* outputs held back until the record they depend on is durable */
	:: atomic { pst[i] == P_PREP_WAIT && plog[i].d >= pwait[i] ->
		pst[i] = P_PREPARED; pSendYes(i) }
	:: atomic { pst[i] == P_COMMIT_WAIT && plog[i].d >= pwait[i] ->
		pst[i] = P_COMMITTED; applyCommit(i); sendC(i, M_ACK) }
	:: atomic { pst[i] == P_1PC_WAIT && plog[i].d >= pwait[i] ->
		pst[i] = P_COMMITTED; applyCommit(i); pSendYes(i) }
	/* in doubt: inquire (InquireAfter, then with backoff, forever) */
	:: atomic { pst[i] == P_PREPARED && !(toC[i] & M_INQ) -> sendC(i, M_INQ) }
#ifdef BUG_SELF_ABORT
	/* a participant that gives up on its own after voting YES */
	:: atomic { pst[i] == P_PREPARED ->
		pst[i] = P_ABORTED; applyAbort(i); pappend(i, R_ABORTED) }
#endif
	od
}

/* crash and restart participant i from what its log kept */
inline crashP(i) {
	/* keep every durable record and any prefix of the rest */
	do
	:: plog[i].n > plog[i].d -> plog[i].n--; plog[i].rec[plog[i].n] = 0
	:: break
	od;
	plog[i].d = plog[i].n;
	pwait[i] = 0;
	if
	:: plog[i].n == 0 -> pst[i] = P_UNKNOWN
	:: plog[i].n > 0 && plog[i].rec[0] == R_COMMITTED1P -> pst[i] = P_COMMITTED
	:: plog[i].n == 1 && plog[i].rec[0] == R_PREPARED -> pst[i] = P_PREPARED
	:: plog[i].n == 2 && plog[i].rec[1] == R_COMMITTED -> pst[i] = P_COMMITTED
	:: plog[i].n == 2 && plog[i].rec[1] == R_ABORTED -> pst[i] = P_ABORTED
	fi;
	printf("MSC: crash P%d (log keeps %d records)\n", i, plog[i].n);
	/* durability: a commit once applied is never undone */
	assert(!g_commit[i] || pst[i] == P_COMMITTED);
	/* recovery replays the decision into the resource */
	if
	:: pst[i] == P_COMMITTED -> applyCommit(i)
	:: pst[i] == P_ABORTED -> applyAbort(i)
	:: else
	fi
}

/* ================= coordinator ================= */

inline creply(o) {
	if
	:: reply == O_NONE -> reply = o; printf("MSC: C->client %d\n", o)
	:: else -> skip
	fi;
	checkSafety()
}

/* any NO, the prepare timeout, or an inquiry while collecting: abort now,
 * nothing logged; tell every branch that did not vote NO/read-only, once */
inline decideAbort() {
	cst = C_ABORTED;
	creply(O_ABORTED);
	d_step { for (kk : 0 .. NP-1) {
		if
		:: cvote[kk] != V_NO && cvote[kk] != V_RO -> sendP(kk, M_ABORT)
		:: else
		fi
	}; kk = 0 }
}

inline onVote(i, v) {
	if
	:: cst == C_COLLECT && NP == 1 ->          /* one-phase */
		cst = C_DONE;
		if
		:: v == V_NO -> creply(O_ABORTED)
		:: else -> creply(O_COMMITTED)
		fi
	:: cst == C_COLLECT && NP > 1 ->
		if
		:: cvote[i] == 0 -> cvote[i] = v
		:: else
		fi;
		if
		:: v == V_NO -> decideAbort()
		:: else ->
			votesIn = 1; yesSet = 0;
			d_step { for (kk : 0 .. NP-1) {
				if
				:: cvote[kk] == 0 -> votesIn = 0
				:: cvote[kk] == V_YES -> yesSet = yesSet | (1 << kk)
				:: else
				fi
			}; kk = 0 }
			if
			:: votesIn && yesSet != 0 ->
				cst = C_COMMITTING; cparts = yesSet; cn = 1   /* append RecCommit (forced) */
			:: votesIn && yesSet == 0 ->
				cst = C_DONE; creply(O_COMMITTED)        /* all read-only */
			:: else
			fi
		fi
	:: (cst == C_UNKNOWN || cst == C_ABORTED) && v == V_YES ->
		sendP(i, M_ABORT)                    /* presumed abort */
	:: else -> skip                              /* late / duplicate: ignored */
	fi
}

inline onAck(i) {
	if
	:: cst == C_COMMITTED && (cparts & (1 << i)) ->
		cacked = cacked | (1 << i);
		if
		:: cacked == cparts ->
			/* durability: the commit is complete only if every listed
			 * participant has really committed */
			d_step { for (kk : 0 .. NP-1) {
				assert(!(cparts & (1 << kk)) || g_commit[kk])
			}; kk = 0 }
			cst = C_ENDED; cn = 2                    /* append RecEnd (not forced) */
		:: else
		fi
	:: else -> skip
	fi
}

inline onInquire(i) {
	if
	:: cst == C_UNKNOWN || cst == C_ABORTED || cst == C_DONE -> sendP(i, M_ABORT)
	:: cst == C_COLLECT -> decideAbort()         /* the inquirer is prepared: abort now */
	:: cst == C_COMMITTED || cst == C_ENDED -> sendP(i, M_COMMIT)
	:: cst == C_COMMITTING ->
#ifdef BUG_INQUIRY_ABORT_PENDING
		sendP(i, M_ABORT)                    /* "no durable decision": presumed abort */
#else
		assert(false)                            /* not enabled: the inquiry waits */
#endif
	fi
}

/* the coordinator's handling of participant i's link */
proctype CoordLink(byte i) {
end:
	do
	:: atomic { (toC[i] & M_YES) -> RECV(toC, i, M_YES, printf("MSC: P%d->C yes\n", i); onVote(i, V_YES)) }
	:: atomic { (toC[i] & M_NO) -> RECV(toC, i, M_NO, printf("MSC: P%d->C no\n", i); onVote(i, V_NO)) }
	:: atomic { (toC[i] & M_RO) -> RECV(toC, i, M_RO, printf("MSC: P%d->C read-only\n", i); onVote(i, V_RO)) }
	:: atomic { (toC[i] & M_ACK) -> RECV(toC, i, M_ACK, printf("MSC: P%d->C ack\n", i); onAck(i)) }
#ifdef BUG_INQUIRY_ABORT_PENDING
	:: atomic { (toC[i] & M_INQ) ->
#else
	/* an inquiry for a decision appended but not durable waits for it */
	:: atomic { (toC[i] & M_INQ) && cst != C_COMMITTING ->
#endif
		RECV(toC, i, M_INQ, printf("MSC: P%d->C inquire\n", i); onInquire(i)) }
	/* redelivery of the commit decision until acked */
	:: atomic { cst == C_COMMITTED && (cparts & (1 << i)) != 0 &&
		(cacked & (1 << i)) == 0 && (toP[i] & M_COMMIT) == 0 -> sendP(i, M_COMMIT) }
	od
}

proctype Coord() {
end:
	do
	/* prepare timeout with votes missing */
	:: atomic { cst == C_COLLECT ->
		votesIn = 1;
		d_step { for (kk : 0 .. NP-1) {
			if
			:: cvote[kk] == 0 -> votesIn = 0
			:: else
			fi
		}; kk = 0 }
		if
		:: !votesIn ->
			printf("MSC: C prepare timeout\n");
			if
			:: NP == 1 -> cst = C_DONE; creply(O_UNKNOWN)   /* never guess */
			:: else -> decideAbort()
			fi
		:: else
		fi }
	/* RecCommit durable: reply and send the decision */
	:: atomic { cst == C_COMMITTING && cd >= 1 ->
		cst = C_COMMITTED;
		creply(O_COMMITTED);
		d_step { for (kk : 0 .. NP-1) {
			if
			:: cparts & (1 << kk) -> sendP(kk, M_COMMIT)
			:: else
			fi
		}; kk = 0 } }
	/* RememberTicks elapsed: forget a finished transaction */
	:: atomic { cst == C_ENDED || cst == C_ABORTED || cst == C_DONE ->
		printf("MSC: C forgets\n");
		cst = C_UNKNOWN; cacked = 0;
		d_step { for (kk : 0 .. NP-1) { cvote[kk] = 0 }; kk = 0 } }
	od
}

inline crashC() {
	do
	:: cn > cd -> cn--
	:: break
	od;
	cd = cn;
	cacked = 0;
	d_step { for (kk : 0 .. NP-1) { cvote[kk] = 0 }; kk = 0 }
#ifdef BUG_NO_REREAD
	cst = C_UNKNOWN;
#else
	if
	:: cn == 1 -> cst = C_COMMITTED          /* RecCommit without RecEnd: redrive */
	:: else -> cst = C_UNKNOWN               /* anything else: presumed abort */
	fi;
#endif
	if
	:: cn == 0 -> cparts = 0
	:: else
	fi;
	printf("MSC: crash C (log keeps %d records)\n", cn)
}

/* ================= environment ================= */

proctype DiskC() {
end:
	do
	:: atomic { cn > cd -> cd = cn }
	od
}

proctype DiskP(byte i) {
end:
	do
	:: atomic { plog[i].n > plog[i].d -> plog[i].d = plog[i].n }
	od
}

proctype Crasher() {
end:
	do
	:: atomic { crashes < MAXCRASH -> crashes++; crashC() }
	:: atomic { crashes < MAXCRASH -> crashes++; crashP(0) }
#if NP > 1
	:: atomic { crashes < MAXCRASH -> crashes++; crashP(1) }
#endif
#if NP > 2
	:: atomic { crashes < MAXCRASH -> crashes++; crashP(2) }
#endif
	od
}

init {
	atomic {
		/* what each resource will answer (unrolled: no choice inside a loop) */
		if :: pvote[0] = V_YES :: pvote[0] = V_NO :: pvote[0] = V_RO fi;
#if NP > 1
		if :: pvote[1] = V_YES :: pvote[1] = V_NO :: pvote[1] = V_RO fi;
#endif
#if NP > 2
		if :: pvote[2] = V_YES :: pvote[2] = V_NO :: pvote[2] = V_RO fi;
#endif
		cst = C_COLLECT;
		d_step { for (k : 0 .. NP-1) { sendP(k, M_PREPARE) }; k = 0 }
		run Coord();
		run DiskC();
		run Crasher();
		for (k : 0 .. NP-1) {
			run CoordLink(k);
			run Part(k);
			run DiskP(k)
		}
	}
}

#ifdef LIVE
/* termination: a participant in doubt eventually learns the outcome;
 * durability: once the client is told "committed", every YES voter
 * eventually commits */
#define indoubt(i)  (pst[i] == P_PREPARED)
#define decided(i)  (pst[i] == P_COMMITTED || pst[i] == P_ABORTED)
#define yesdone(i)  (pvote[i] != V_YES || pst[i] == P_COMMITTED)
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
