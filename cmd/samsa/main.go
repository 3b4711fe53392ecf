// Command samsa is the samsa toolbox. It runs a standalone embedded
// broker, for running several job instances (or a benchmark) against one
// local broker:
//
//	samsa broker [--data-dir D] [--listen ADDR] [--log-level L]
//
// The broker is franz-go's kfake with a data directory: topics, records
// and group offsets survive a restart. It prints its address and runs
// until SIGINT or SIGTERM.
//
// Its admin helpers work with any Kafka-protocol brokers (the embedded
// one by default): samsa topics (list, describe, create, delete), samsa
// groups (list, describe), samsa lag, and a line-based samsa produce and
// samsa consume. `samsa help` lists their flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/samsa-go/samsa/connectors/embedded"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `samsa: the samsa toolbox

Usage:
  samsa broker [flags]   run a standalone embedded Kafka-protocol broker
  samsa topics|groups|lag|produce|consume ...   admin helpers (below)

Flags of broker:
  --data-dir dir      where the broker keeps its data (env SAMSA_DATA_DIR); empty keeps it in memory
  --listen host:port  address to listen on (env SAMSA_LISTEN); default 127.0.0.1:9092
  --log-level level   trace, debug, info, warn or error (env SAMSA_LOG_LEVEL); default info
  --group-min-session-timeout duration
                      the shortest consumer-group session timeout the broker accepts
                      (env SAMSA_GROUP_MIN_SESSION_TIMEOUT); default 6s, as Kafka's
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage+adminUsage)
		return 0
	}
	switch args[0] {
	case "broker":
	case "topics", "groups", "lag", "produce", "consume":
		return admin(ctx, args, os.Stdin, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "samsa: unknown command %q (see samsa help)\n", args[0])
		return 2
	}
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dataDir := fs.String("data-dir", os.Getenv("SAMSA_DATA_DIR"), "")
	listen := fs.String("listen", envOr("SAMSA_LISTEN", embedded.DefaultListen), "")
	level := fs.String("log-level", envOr("SAMSA_LOG_LEVEL", "info"), "")
	minSession := fs.String("group-min-session-timeout", os.Getenv("SAMSA_GROUP_MIN_SESSION_TIMEOUT"), "")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "samsa broker: %v (see samsa help)\n", err)
		return 2
	}
	lvl := hclog.LevelFromString(*level)
	if lvl == hclog.NoLevel {
		fmt.Fprintf(stderr, "samsa broker: flag --log-level: %q is not one of trace, debug, info, warn, error\n", *level)
		return 2
	}
	var sessionMin time.Duration
	if *minSession != "" {
		d, err := time.ParseDuration(*minSession)
		if err != nil || d <= 0 {
			fmt.Fprintf(stderr, "samsa broker: flag --group-min-session-timeout: %q is not a positive duration\n", *minSession)
			return 2
		}
		sessionMin = d
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "samsa-broker", Level: lvl, Output: stderr})
	b, err := embedded.Start(embedded.Config{DataDir: *dataDir, Listen: *listen, Logger: log, SessionTimeoutMin: sessionMin})
	if err != nil {
		fmt.Fprintf(stderr, "samsa broker: %v\n", err)
		return 1
	}
	log.Info("broker listening", "addr", b.Addr(), "data_dir", *dataDir)
	fmt.Fprintln(stdout, b.Addr())
	<-ctx.Done()
	log.Info("stopping")
	b.Close()
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
