package statements_test

import (
	"fmt"
	"strings"

	"github.com/commitd/commitd/participant/statements"
)

// A client builds a branch's work by naming a statement the participant's
// --statements file defines, with its arguments; the participant binds
// them as parameters and never reads SQL from the work.
func ExampleAppendWork() {
	work, err := statements.AppendWork(nil, "reserve", statements.IntArg(2), statements.TextArg("apple"))
	if err != nil {
		panic(err)
	}
	// client.Branch{Participant: "shop", Work: work} in a client.Run.
	name, args, _ := statements.DecodeWork(work)
	fmt.Println(name, args[0].Int, args[1].Text, len(work))
	// Output: reserve 2 apple 27
}

// The participant's side: parse the operator's file once, then bind each
// branch's work to a statement and its driver arguments.
func ExampleSet_Bind() {
	set, err := statements.Parse(strings.NewReader(`
[reserve]
params = int text
rows = 1
sql = UPDATE stock SET qty = qty - ? WHERE sku = ? AND qty >= 0
`), "inventory.statements")
	if err != nil {
		panic(err)
	}
	work, _ := statements.AppendWork(nil, "reserve", statements.IntArg(2), statements.TextArg("apple"))
	st, args, err := set.Bind(work)
	fmt.Println(st.Name, args, err)
	_, _, err = set.Bind([]byte("DROP TABLE stock"))
	fmt.Println(err)
	// Output:
	// reserve [2 apple] <nil>
	// statements: bad work: not a statement work (want 'S', a name and arguments)
}
