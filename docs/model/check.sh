#!/usr/bin/env bash
# check.sh -- model-check commitd's two-phase commit (docs/model/commit.pml).
#
#   check.sh              exhaustive checks, 2 participants (and one-phase
#                         commit with 1): safety, liveness under weak
#                         fairness, and every planted bug, which must fail.
#   check.sh --bitstate3  bounded (bitstate) checks with 3 participants;
#                         takes a few minutes.
#   check.sh --staged2    the staged protocol (issue 16) with two crashes:
#                         exhaustive, long (tens of minutes, several GB).
#   check.sh -v ...       also print the message sequence of every
#                         counterexample found.
#
# Prints a table (variant, run, bounds, expected, result, states stored,
# wall and cpu seconds, what failed) and exits non-zero if any result differs from what is
# expected. Needs spin (Debian/Ubuntu: apt-get install spin) and a C
# compiler. Works from any directory; builds in a temporary directory and
# removes it.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model=$here/commit.pml

mode=exhaustive
verbose=0
for a in "$@"; do
	case $a in
	--bitstate3) mode=bitstate3 ;;
	--staged2) mode=staged2 ;;
	-v | --verbose) verbose=1 ;;
	-h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "check.sh: unknown argument $a (try --help)" >&2; exit 2 ;;
	esac
done

if ! command -v spin >/dev/null 2>&1; then
	echo "check.sh: spin is not installed (Debian/Ubuntu: apt-get install spin; see https://spinroot.com)" >&2
	exit 2
fi
CC=${CC:-cc}
if ! command -v "$CC" >/dev/null 2>&1; then
	echo "check.sh: no C compiler ($CC) to build the verifier" >&2
	exit 2
fi
jobs=$(nproc 2>/dev/null || echo 2)

work=$(mktemp -d "${TMPDIR:-/tmp}/commitd-model.XXXXXX")
cleanup() {
	local p
	for p in $(jobs -p); do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One run: name, kind (safety|live), expected (PASS|FAIL), spin -D flags,
# extra cc flags, extra pan flags.
runs=()
add() { runs+=("$1|$2|$3|$4|$5|$6"); }

# Weak fairness needs room for every process: init, Coord, DiskC, Crasher,
# (with RETIRE, Operator,) five per participant, and the never claim (pan
# allows 4*NFAIR-2).
nfair() { echo $(((10 + 5 * $1) / 4)); }

# Big runs are compiled with -O1, the biggest with -O2 (the staged safety
# run: 104 s at -O2 against 324 s at -O1 with -DCOLLAPSE, the same 11.5
# million states, in 1.7 GB instead of less than 1), the quick ones with -O0.
BUGS="BUG_VOTE_BEFORE_DURABLE BUG_DUP_PREPARE_FROM_MEMORY BUG_INQUIRY_ABORT_PENDING
	BUG_SELF_ABORT BUG_NO_REREAD BUG_ACK_BEFORE_DURABLE BUG_DECIDE_BEFORE_DURABLE
	BUG_REUSE_YES"
STAGED_BUGS="BUG_STAGED_REPLY_EARLY BUG_NO_REFUSE_AFTER_PREVENT BUG_STAGED_TIMEOUT_ABORT
	BUG_INQUIRY_LATE_STAGED BUG_STAGED_RO BUG_COMMIT_MSG_EARLY"
if [ "$mode" = exhaustive ]; then
	S="-DSAFETY -DNOCLAIM"
	L="-DNFAIR=$(nfair 2)"
	# The three longest runs first (about 2, 1.5 and 0.5 minutes here): runs
	# start in this order, $jobs at a time, so the long ones overlap the
	# many short ones instead of starting last (from the runs' times on a
	# 2-core machine: about 8 minutes in list order, about 6 this way).
	# staged decisions (issue 16): see below
	add staged    safety PASS "-DNP=2 -DMAXCRASH=1 -DSTAGED" "-O2 $S" "-w25"
	# the id used again once the coordinator forgot it: the participants' rule
	add reuse     safety PASS "-DNP=2 -DMAXCRASH=2 -DREUSE" "-O2 $S" "-w24"
	# a planted bug found only after 3 million states: optimised too
	add BUG_ID_WINDOW safety FAIL "-DNP=2 -DMAXCRASH=2 -DBUG_ID_WINDOW" "-O2 $S" "-w22"
	add correct   safety PASS "-DNP=2 -DMAXCRASH=2" "-O1 $S" "-w22"
	# the retired-group rule (issue 19, docs/protocol.md "Clusters of groups"):
	# a participant aborts what it holds of a group retired once drained
	add retire    safety PASS "-DNP=2 -DMAXCRASH=2 -DRETIRE" "-O1 $S" "-w22"
	add retire    live   PASS "-DNP=2 -DLIVE -DRETIRE -DMAXCRASH=1 -DMAXLOSS=1 -DMAXDUP=0" "-O1 $L" "-a -f -w21"
	for b in BUG_RETIRE_NO_DRAIN BUG_RETIRE_UNACKED; do
		add "$b" safety FAIL "-DNP=2 -DMAXCRASH=2 -D$b" "-O0 $S" "-w20"
	done
	# liveness: two budgets, so that each run stays small
	add correct   live   PASS "-DNP=2 -DLIVE -DMAXCRASH=2 -DMAXLOSS=1 -DMAXDUP=0" "-O1 $L" "-a -f -w21"
	add correct   live   PASS "-DNP=2 -DLIVE -DMAXCRASH=1 -DMAXLOSS=1 -DMAXDUP=1" "-O1 $L" "-a -f -w21"
	add one-phase safety PASS "-DNP=1 -DMAXCRASH=2" "-O0 $S" "-w16"
	add one-phase live   PASS "-DNP=1 -DLIVE -DMAXCRASH=2 -DMAXLOSS=1 -DMAXDUP=1" "-O0 -DNFAIR=$(nfair 1)" "-a -f -w16"
	for b in $BUGS; do
		add "$b" safety FAIL "-DNP=2 -DMAXCRASH=2 -D$b" "-O0 $S" "-w20"
	done
	add BUG_NO_INQUIRY live FAIL "-DNP=2 -DLIVE -DMAXCRASH=2 -DMAXLOSS=1 -DMAXDUP=0 -DBUG_NO_INQUIRY" "-O0 $L" "-a -f -w20"
	# staged decisions (issue 16, docs/protocol.md "Staged commits"): the
	# protocol with a deposed leader that lives on, and its planted bugs
	# (one crash: the deposed leader and every planted bug need only one;
	# --staged2 checks two; its safety run is at the top)
	add staged    live   PASS "-DNP=2 -DSTAGED -DLIVE -DMAXCRASH=1 -DMAXLOSS=1 -DMAXDUP=0" "-O1 $L" "-a -f -w21"
	# each planted bug is caught even on a network that loses and
	# duplicates nothing (messages may still be delayed and reordered),
	# in about a second
	for b in $STAGED_BUGS; do
		add "$b" safety FAIL "-DNP=2 -DMAXCRASH=1 -DNETBUDGET -DMAXLOSS=0 -DMAXDUP=0 -D$b" "-O1 $S -DCOLLAPSE" "-w22"
	done
	# not a bug: what the engine's "no message outlives RememberTicks"
	# assumption protects (a participant forgets; a duplicate prepare comes)
	add FORGET_PART safety FAIL "-DNP=2 -DMAXCRASH=2 -DFORGET_PART" "-O0 $S" "-w20"
elif [ "$mode" = staged2 ]; then
	# Staged decisions with two crashes (any node, the deposed leader's
	# included): exhaustive, tens of millions of states and several GB.
	S="-DSAFETY -DNOCLAIM"
	add staged safety PASS "-DNP=2 -DMAXCRASH=2 -DSTAGED" "-O2 $S -DCOLLAPSE" "-w26"
	add staged live   PASS "-DNP=2 -DSTAGED -DLIVE -DMAXCRASH=1 -DMAXLOSS=1 -DMAXDUP=1" "-O1 -DNFAIR=$(nfair 2)" "-a -f -w22"
else
	# Bitstate (supertrace): 3 participants is too big to search
	# exhaustively; each run stops after MODEL_MINUTES (default 4).
	q="-Q${MODEL_MINUTES:-4}"
	S="-DSAFETY -DNOCLAIM -DBITSTATE"
	L="-DNFAIR=$(nfair 3) -DBITSTATE"
	add correct safety PASS "-DNP=3 -DMAXCRASH=2" "-O2 $S" "-w30 $q"
	add correct live   PASS "-DNP=3 -DLIVE -DMAXCRASH=2 -DMAXLOSS=1 -DMAXDUP=1" "-O2 $L" "-a -f -w30 $q"
	for b in $BUGS; do
		add "$b" safety FAIL "-DNP=3 -DMAXCRASH=2 -D$b" "-O0 $S" "-w26 $q"
	done
	add BUG_NO_INQUIRY live FAIL "-DNP=3 -DLIVE -DMAXCRASH=2 -DMAXLOSS=1 -DMAXDUP=0 -DBUG_NO_INQUIRY" "-O0 $L" "-a -f -w26 $q"
fi

# what: map pan's complaint to the property it breaks
what() {
	local out=$1
	if grep -q 'acceptance cycle' "$out"; then echo "liveness: termination/durability never reached"; return; fi
	local a
	a=$(grep -m1 'assertion violated' "$out")
	case $a in
	*reply2*allOK*) echo "validity (reuse): committed without every participant preparing its work" ;;
	*'reply2==1)&&anyA'*) echo "durability (reuse): told committed, a participant aborts" ;;
	*'reply2==2)&&anyC'*) echo "told aborted (reuse), a participant commits" ;;
	*'anyC&&anyA'*) echo "atomicity: one commits, another aborts" ;;
	*g_cabortlog*) echo "agreement: committed (told or applied) after an abort decision" ;;
	*'reply==1)&&anyA'*) echo "durability: told committed, a participant aborts" ;;
	*'reply==2)&&anyC'*) echo "told aborted, a participant commits" ;;
	*allOK*) echo "validity: commit without every vote yes/read-only" ;;
	*g_commit\[*kk*) echo "durability: ended while a YES voter never committed" ;;
	*'||(pst['*) echo "durability: a commit undone (restored in doubt)" ;;
	*creplied*) echo "second reply to the client" ;;
	'') grep -m1 -E 'error|invalid' "$out" | cut -c1-60 ;;
	*) echo "${a#pan:1: }" | cut -c1-60 ;;
	esac
}

# bounds: "P=2 C=2 L=1 D=0" -- participants, crashes, losses, duplicates
# (* = unbounded)
bounds() {
	local f=$1 np c l='*' dd='*'
	np=$(sed -n 's/.*-DNP=\([0-9]*\).*/\1/p' <<<"$f")
	c=$(sed -n 's/.*-DMAXCRASH=\([0-9]*\).*/\1/p' <<<"$f")
	if grep -qE -- '-DLIVE|-DNETBUDGET' <<<"$f"; then
		l=$(sed -n 's/.*-DMAXLOSS=\([0-9]*\).*/\1/p' <<<"$f")
		dd=$(sed -n 's/.*-DMAXDUP=\([0-9]*\).*/\1/p' <<<"$f")
	fi
	echo "P=$np C=$c L=$l D=$dd"
}

# one: build and run the i-th entry in its own directory, write a result line
one() {
	local i=$1 spec=$2 name kind exp dflags ccflags panflags d t0 t1 res states secs cpu why
	IFS='|' read -r name kind exp dflags ccflags panflags <<<"$spec"
	d=$work/$i
	mkdir -p "$d"
	cp "$model" "$d/commit.pml"
	t0=$(date +%s.%N)
	local TIMEFORMAT='%U %S'
	{ time (
		cd "$d" &&
			spin $dflags -a commit.pml >spin.out 2>&1 &&
			$CC -w $ccflags -o pan pan.c >cc.out 2>&1 &&
			./pan -m20000 $panflags >pan.out 2>&1
	) ; } 2>"$d/cpu"
	t1=$(date +%s.%N)
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
	cpu=$(awk '{ printf "%.1f", $1 + $2 }' "$d/cpu")
	states=$(awk '/states, stored/ { print $1; exit }' "$d/pan.out" 2>/dev/null)
	states=${states:--}
	why=""
	if [ ! -s "$d/pan.out" ]; then
		res=ERROR
		why="build failed: $(cat "$d/spin.out" "$d/cc.out" 2>/dev/null | grep -m1 -i error | cut -c1-60)"
	elif grep -q 'max search depth too small' "$d/pan.out"; then
		res=ERROR
		why="search depth too small"
	elif grep -qE 'errors: 0$' "$d/pan.out"; then
		res=PASS
		if grep -q 'Time limit' "$d/pan.out"; then
			why="bounded: stopped at the time limit"
		elif grep -q 'BITSTATE' <<<"$ccflags"; then
			why="bitstate: complete up to hash collisions"
		fi
	elif grep -qE 'assertion violated|acceptance cycle' "$d/pan.out"; then
		res=FAIL
		why=$(what "$d/pan.out")
	else
		res=ERROR
		why=$(grep -m1 -iE 'error' "$d/pan.out" | cut -c1-60)
	fi
	if [ "$res" = FAIL ]; then
		(cd "$d" && spin $dflags -t commit.pml 2>/dev/null | grep -E 'MSC:|START OF CYCLE' |
			sed -e 's/^ *//' -e 's/^MSC: //' -e 's/<<<<<START OF CYCLE>>>>>/-- cycle: --/' >trail.msc)
	fi
	printf '%s|%s|%s|%s|%s|%s|%s|%s|%s\n' "$name" "$kind" "$(bounds "$dflags")" "$exp" "$res" "$states" "$secs" "$cpu" "$why" >"$d/result"
}

start=$(date +%s.%N)
echo "commitd model check ($mode): ${#runs[@]} runs, $jobs at a time, spin $(spin -V | awk '{print $3}')"
n=0
for i in "${!runs[@]}"; do
	one "$i" "${runs[$i]}" &
	n=$((n + 1))
	if [ "$n" -ge "$jobs" ]; then
		wait -n
		n=$((n - 1))
	fi
done
wait

bad=0
printf '\n%-28s %-6s %-15s %-8s %-6s %10s %7s %7s  %s\n' variant run bounds expected result states "wall s" "cpu s" "what failed / note"
printf '%-28s %-6s %-15s %-8s %-6s %10s %7s %7s  %s\n' ---------------------------- ------ --------------- -------- ------ ---------- ------- ------- ------------------
for i in "${!runs[@]}"; do
	IFS='|' read -r name kind bnd exp res states secs cpu why <"$work/$i/result"
	mark=""
	if [ "$res" != "$exp" ]; then
		mark="  <-- UNEXPECTED"
		bad=1
	fi
	printf '%-28s %-6s %-15s %-8s %-6s %10s %7s %7s  %s%s\n' "$name" "$kind" "$bnd" "$exp" "$res" "$states" "$secs" "$cpu" "$why" "$mark"
	if [ -s "$work/$i/trail.msc" ] && { [ "$verbose" = 1 ] || [ "$res" != "$exp" ]; }; then
		sed 's/^/      /' "$work/$i/trail.msc"
	fi
	if [ "$res" = ERROR ]; then
		tail -5 "$work/$i/pan.out" 2>/dev/null | sed 's/^/      /'
	fi
done
total=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
totalcpu=$(cat "$work"/*/cpu | awk '{ s += $1 + $2 } END { printf "%.1f", s }')
echo
if [ "$bad" = 0 ]; then
	echo "OK: every result as expected (${total}s wall, ${totalcpu}s cpu)"
else
	echo "FAILED: some results differ from what is expected (${total}s wall, ${totalcpu}s cpu)"
fi
exit "$bad"
