// Command samsa is the samsa toolbox. It runs a standalone embedded
// broker, for running several job instances (or a benchmark) against one
// local broker:
//
//	samsa broker [--data-dir D] [--listen ADDR] [--log-level L]
//	             [--tls-cert F --tls-key F [--tls-client-ca F]]
//	             [--sasl-mechanism M --sasl-user U] [--sasl-users-file F]
//
// The broker is franz-go's kfake with a data directory: topics, records
// and group offsets survive a restart. It prints its address and runs
// until SIGINT or SIGTERM. With TLS flags it accepts TLS only (mutual TLS
// with --tls-client-ca); with SASL flags it requires authentication, and
// every user it knows may do anything. Passwords come from files or the
// environment (SAMSA_SASL_PASSWORD), never from the command line.
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
	"strings"
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
  --tls-cert file, --tls-key file
                      serve TLS only, with this PEM certificate and key
                      (env SAMSA_TLS_CERT, SAMSA_TLS_KEY)
  --tls-client-ca file
                      require clients to present a certificate signed by a CA in this
                      PEM file: mutual TLS (env SAMSA_TLS_CLIENT_CA)
  --sasl-mechanism PLAIN|SCRAM-SHA-256|SCRAM-SHA-512, --sasl-user user
                      require SASL; this user may do anything (env SAMSA_SASL_MECHANISM,
                      SAMSA_SASL_USER). Its password comes from --sasl-password-file file
                      or env SAMSA_SASL_PASSWORD, never from the command line
  --sasl-users-file file
                      require SASL; users from the file, one a line:
                      MECHANISM USER PASSWORD (env SAMSA_SASL_USERS_FILE)
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
	tlsCert := fs.String("tls-cert", os.Getenv("SAMSA_TLS_CERT"), "")
	tlsKey := fs.String("tls-key", os.Getenv("SAMSA_TLS_KEY"), "")
	tlsClientCA := fs.String("tls-client-ca", os.Getenv("SAMSA_TLS_CLIENT_CA"), "")
	saslMech := fs.String("sasl-mechanism", os.Getenv("SAMSA_SASL_MECHANISM"), "")
	saslUser := fs.String("sasl-user", os.Getenv("SAMSA_SASL_USER"), "")
	saslPassFile := fs.String("sasl-password-file", os.Getenv("SAMSA_SASL_PASSWORD_FILE"), "")
	saslUsersFile := fs.String("sasl-users-file", os.Getenv("SAMSA_SASL_USERS_FILE"), "")
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
	cfg := embedded.Config{DataDir: *dataDir, Listen: *listen, SessionTimeoutMin: sessionMin}
	if *tlsCert != "" || *tlsKey != "" || *tlsClientCA != "" {
		if *tlsCert == "" || *tlsKey == "" {
			fmt.Fprintln(stderr, "samsa broker: flags --tls-cert and --tls-key: give both (--tls-client-ca needs them too)")
			return 2
		}
		tc, err := embedded.ServerTLS(*tlsCert, *tlsKey, *tlsClientCA)
		if err != nil {
			fmt.Fprintf(stderr, "samsa broker: %v\n", err)
			return 2
		}
		cfg.TLS = tc
	}
	users, err := saslUsers(*saslMech, *saslUser, *saslPassFile, *saslUsersFile, os.Getenv("SAMSA_SASL_PASSWORD"))
	if err != nil {
		fmt.Fprintf(stderr, "samsa broker: %v\n", err)
		return 2
	}
	cfg.SASL = users
	log := hclog.New(&hclog.LoggerOptions{Name: "samsa-broker", Level: lvl, Output: stderr})
	cfg.Logger = log
	b, err := embedded.Start(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "samsa broker: %v\n", err)
		return 1
	}
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = u.Name + " (" + u.Mechanism + ")"
	}
	log.Info("broker listening", "addr", b.Addr(), "data_dir", *dataDir, "tls", cfg.TLS != nil,
		"mutual_tls", *tlsClientCA != "", "sasl_users", strings.Join(names, ", "))
	fmt.Fprintln(stdout, b.Addr())
	<-ctx.Done()
	log.Info("stopping")
	b.Close()
	return 0
}

// saslUsers returns the broker's SASL users: the one of --sasl-mechanism
// and --sasl-user, with its password from the file or else the
// environment, and those of the users file. Errors name the flag or the
// file and line, never a password.
func saslUsers(mech, user, passFile, usersFile, envPass string) ([]embedded.User, error) {
	var users []embedded.User
	switch {
	case mech != "" && user == "":
		return nil, errors.New("flag --sasl-mechanism: needs --sasl-user")
	case mech == "" && user != "":
		return nil, errors.New("flag --sasl-user: needs --sasl-mechanism")
	case mech != "":
		pass := envPass
		if passFile != "" {
			b, err := os.ReadFile(passFile)
			if err != nil {
				return nil, fmt.Errorf("flag --sasl-password-file: %w", err)
			}
			pass = strings.TrimRight(string(b), "\r\n")
		}
		if pass == "" {
			return nil, fmt.Errorf("flag --sasl-user %s: no password: give --sasl-password-file or the environment variable SAMSA_SASL_PASSWORD", user)
		}
		users = append(users, embedded.User{Mechanism: strings.ToUpper(mech), Name: user, Password: pass})
	case passFile != "":
		return nil, errors.New("flag --sasl-password-file: needs --sasl-mechanism and --sasl-user")
	}
	if usersFile != "" {
		b, err := os.ReadFile(usersFile)
		if err != nil {
			return nil, fmt.Errorf("flag --sasl-users-file: %w", err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			f := strings.Fields(line)
			if len(f) != 3 {
				return nil, fmt.Errorf("flag --sasl-users-file: %s:%d: want MECHANISM USER PASSWORD", usersFile, i+1)
			}
			users = append(users, embedded.User{Mechanism: strings.ToUpper(f[0]), Name: f[1], Password: f[2]})
		}
	}
	return users, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
