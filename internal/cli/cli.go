// Package cli is how every herald subcommand takes its settings: spf13/pflag flags, each of
// which may also be set by the environment variable HERALD_<NAME> (upper case, dashes as
// underscores; a flag on the command line wins), one --log-level and one JSON logger (slog),
// and a --help that lists every flag with its variable and default.
//
// Kubernetes gives every pod variables for the Services of its namespace (HERALD_WEBHOOK_PORT
// for herald-webhook): the pods Herald runs itself set enableServiceLinks: false. The injected
// sidecar's flags end in no _PORT or _SERVICE_HOST, so an app's Services cannot set them.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// ErrHelp is returned by Parse after --help printed the usage.
var ErrHelp = pflag.ErrHelp

// FlagSet is one subcommand's flags.
type FlagSet struct {
	*pflag.FlagSet
	usage    []string // the lines above the flags
	footer   string   // the text below them
	logLevel string
	out      io.Writer
}

// New starts the flags of `herald <name>`; usage is what --help prints above the flags.
func New(name string, out io.Writer, usage ...string) *FlagSet {
	f := &FlagSet{FlagSet: pflag.NewFlagSet("herald "+name, pflag.ContinueOnError), usage: usage, out: out}
	f.SetOutput(out)
	f.SortFlags = true
	f.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error (JSON logs on stderr)")
	f.Usage = f.printUsage
	return f
}

// Footer sets the text --help prints below the flags.
func (f *FlagSet) Footer(text string) { f.footer = text }

// EnvName is the environment variable of a flag: HERALD_ and its name in upper case, dashes as
// underscores (--redis-addresses: HERALD_REDIS_ADDRESSES).
func EnvName(flag string) string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Parse sets each flag from its environment variable (read with getenv), then from args.
func (f *FlagSet) Parse(args []string, getenv func(string) string) error {
	var err error
	f.VisitAll(func(fl *pflag.Flag) {
		if v := getenv(EnvName(fl.Name)); v != "" && err == nil {
			if serr := fl.Value.Set(v); serr != nil {
				err = fmt.Errorf("environment variable %s=%q: %w", EnvName(fl.Name), v, serr)
			}
		}
	})
	if err != nil {
		return err
	}
	if err := f.FlagSet.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; see --help", f.Args())
	}
	return nil
}

func (f *FlagSet) printUsage() {
	for _, l := range f.usage {
		fmt.Fprintln(f.out, l)
	}
	fmt.Fprintln(f.out, "\nFlags (each may be set by the environment variable in brackets; the command line wins):")
	f.VisitAll(func(fl *pflag.Flag) {
		fmt.Fprintf(f.out, "  --%s (default %q) [%s]\n    \t%s\n", fl.Name, fl.DefValue, EnvName(fl.Name), fl.Usage)
	})
	if f.footer != "" {
		fmt.Fprintln(f.out, "\n"+f.footer)
	}
}

// Logger is the JSON logger --log-level asks for, writing to w.
func (f *FlagSet) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
}

// IsHelp says whether err is --help having printed the usage.
func IsHelp(err error) bool { return errors.Is(err, ErrHelp) }
