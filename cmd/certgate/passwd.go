package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	"github.com/certgate/certgate/config"
)

// stdin is what certgate passwd reads the password from; tests replace it.
var stdin io.Reader = os.Stdin

// cmdPasswd runs "certgate passwd": it reads a password and prints its
// bcrypt hash for password_hash, or with --check says whether a hash (or
// a user:hash line pasted from htpasswd) will do.
func cmdPasswd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("passwd", stderr)
	cost := fs.Int("cost", config.DefaultBcryptCost, fmt.Sprintf("bcrypt cost: each step doubles the work (%d to %d; below %d is weak)", bcrypt.MinCost, bcrypt.MaxCost, config.MinBcryptCost))
	check := fs.String("check", "", "say whether this hash, or a user:hash line from htpasswd, will do as password_hash")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		// A password on the command line lands in the shell's history.
		return usageError{errors.New("certgate passwd takes no password argument: it reads the password from the terminal or standard input")}
	}
	if *check != "" {
		problem, warning := config.PasswordHashProblem(strings.TrimSpace(*check))
		switch {
		case problem != "":
			return fmt.Errorf("will not do as password_hash: %s", problem)
		case warning != "":
			fmt.Fprintf(stdout, "will do as password_hash, but %s\n", warning)
		default:
			fmt.Fprintln(stdout, "will do as password_hash")
		}
		return nil
	}
	if *cost < bcrypt.MinCost || *cost > bcrypt.MaxCost {
		return usageError{fmt.Errorf("--cost %d: bcrypt takes %d to %d", *cost, bcrypt.MinCost, bcrypt.MaxCost)}
	}
	if *cost < config.MinBcryptCost {
		fmt.Fprintf(stderr, "warning: cost %d is below %d; check-config will warn about this hash\n", *cost, config.MinBcryptCost)
	}
	pw, err := readPassword(stderr)
	if err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword(pw, *cost)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", hash)
	return nil
}

// readPassword asks twice, without echo, on a terminal; otherwise it reads
// the first line of standard input (a pipe, a file).
func readPassword(prompt io.Writer) ([]byte, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(prompt, "Password: ")
		pw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, err
		}
		fmt.Fprint(prompt, "Again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(pw, again) {
			return nil, errors.New("the two passwords differ")
		}
		return checkPassword(pw)
	}
	line, err := bufio.NewReader(stdin).ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return checkPassword(bytes.TrimRight(line, "\r\n"))
}

func checkPassword(pw []byte) ([]byte, error) {
	switch {
	case len(pw) == 0:
		return nil, errors.New("empty password")
	case len(pw) > 72:
		// bcrypt reads only the first 72 bytes; golang.org/x/crypto refuses more.
		return nil, errors.New("password longer than 72 bytes, all bcrypt reads")
	}
	return pw, nil
}
