package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/commitd/commitd/client"
)

// runClusterReload is `commitd admin cluster reload`: each process named
// re-reads its --cluster file, as on SIGHUP. Each replica of a group holds
// its own copy of the map, so every address listed is asked (not the
// first that answers, as for reports), and each answers on a line of its
// own: the version it uses now, or why it refused the map (and kept the
// one it had). Any refusal or unreachable process makes it fail.
func runClusterReload(args []string) error {
	if len(args) == 0 || args[0] != "reload" {
		if len(args) > 0 && isHelp(args[0]) {
			args = []string{"-h"}
		} else {
			return usageError{errors.New("admin cluster: say reload (commitd admin cluster reload --coordinator ADDR | --participant ADDR)")}
		}
	} else {
		args = args[1:]
	}
	fs := newFlags("admin cluster reload")
	var coord, part string
	var tf tlsFlags
	fs.StringVar(&coord, "coordinator", "", "a coordinator's address, or every replica's ADDR1,ADDR2,... (each re-reads its --cluster file)")
	fs.StringVar(&part, "participant", "", "a participant's address, or several ADDR1,ADDR2,...")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	tf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if (coord == "") == (part == "") {
		return usageError{errors.New("admin cluster reload: give --coordinator ADDR or --participant ADDR (one of them)")}
	}
	tlsCfg, err := tf.config()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	return clusterReload(ctx, os.Stdout, strings.Split(coord+part, ","), tlsCfg)
}

// reloadLine is one process's answer to admin cluster reload.
type reloadLine struct {
	Addr       string `json:"addr"`
	MapVersion uint64 `json:"map_version,omitempty"`
	File       string `json:"file,omitempty"`
	Error      string `json:"error,omitempty"`
}

// clusterReload asks each of addrs in turn and writes one JSON line per
// answer to w; it fails if any process could not be asked or refused.
func clusterReload(ctx context.Context, w io.Writer, addrs []string, tlsCfg *tls.Config) error {
	failed := 0
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		line := reloadLine{Addr: a}
		r, err := client.ReloadCluster(ctx, a, tlsCfg)
		if err != nil {
			failed++
			line.Error = adminError(err).Error()
		} else {
			line.MapVersion, line.File = r.MapVersion, r.File
		}
		b, err := json.Marshal(line)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "%s\n", b); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("admin cluster reload: %d of %d processes did not reload (see their lines)", failed, len(addrs))
	}
	return nil
}
