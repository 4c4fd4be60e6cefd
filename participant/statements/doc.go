// Package statements is the operator's own SQL for a database
// participant (participant/postgres, participant/mysql): a file of named,
// parameterized statements registered when the participant starts
// (`--statements FILE`), and the work encoding with which a branch names
// one of them and passes its arguments.
//
// No SQL text ever comes from the network. A branch's work carries only a
// statement's name and typed arguments; the participant looks the name up
// in the file it loaded, checks the argument count and types against the
// statement's declared parameters, and hands the arguments to the
// database as bind parameters of a server-side prepared statement, never
// spliced into the SQL. A work the set does not accept, a statement that
// fails, or one that affects a number of rows outside its declared range
// votes NO (Bind's and CheckRows' errors say why).
//
// The file format, line by line:
//
//	# A comment: a line whose first non-blank character is #.
//	# A statement's name: 1..64 of A-Z a-z 0-9 . _ -
//	[reserve]
//	# Its parameters in order, int (64-bit) or text; may be empty.
//	params = int text
//	# The affected rows it must report: N, N..M, N.. or any.
//	rows = 1
//	# Indented lines continue the sql value.
//	sql = UPDATE stock SET qty = qty - ?
//	      WHERE sku = ? AND qty >= 0
//
// Every statement needs all three keys. The SQL uses the database's own
// placeholders ($1, $2 for PostgreSQL; ? for MySQL/MariaDB), and the
// participant checks, when it starts, that the server counts as many
// parameters as the file declares. A line that does not parse names its
// file and line number.
//
// The work encoding (all integers big-endian):
//
//	+------+-----+--------+-----+--------------------------------------+
//	| 'S'  | n   | name   | k   | k arguments                          |
//	| u8   | u8  | n bytes| u8  | 'i' i64  |  't' u16 length, bytes    |
//	+------+-----+--------+-----+--------------------------------------+
//
// AppendWork builds it (a Go client or `commitd bench --statement`);
// DecodeWork and Set.Bind read it.
package statements
