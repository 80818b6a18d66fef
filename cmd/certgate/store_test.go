package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/sqlite"
)

// damageStore fills the spool at dbPath with a little mail, then writes
// garbage over a table's first page, as a failing disk would.
func damageStore(t *testing.T, dbPath string) {
	t.Helper()
	ctx := context.Background()
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, dbPath, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		m := store.Message{ID: fmt.Sprintf("m%02d", i), Tenant: "issuer", Class: "bulk", MailFrom: "a@ca.example"}
		if _, err := st.Enqueue(ctx, m, [][]byte{[]byte("Subject: x\r\n\r\nhi\r\n")}, []store.NewRecipient{store.NewCopy("r@x.example", store.StateQueued, m.ReceivedAt)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dbPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The page size is in the file's header (1 stands for 65536); the
	// second page is the first table's root.
	var size [2]byte
	if _, err := f.ReadAt(size[:], 16); err != nil {
		t.Fatal(err)
	}
	pageSize := int64(binary.BigEndian.Uint16(size[:]))
	if pageSize == 1 {
		pageSize = 65536
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5, 0x5a}, 64), pageSize); err != nil {
		t.Fatal(err)
	}
}

// A damaged spool stops serve before it listens, and the message says what
// to do; store check finds the same and says the same.
func TestDamagedStoreRefusedWithAdvice(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeSmallConfig(t, dir, "")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	dbPath := storePath(cfg)
	damageStore(t, dbPath)

	advice := []string{"damaged", dbPath, "SQLite found:", "restore the newest backup", "certgate store check --config " + cfgPath,
		"sqlite3 " + dbPath + " .recover", "certgate store check --db"}
	hasAdvice := func(what, text string) {
		t.Helper()
		for _, want := range advice {
			if !strings.Contains(strings.ToLower(text), strings.ToLower(want)) {
				t.Errorf("%s does not say %q:\n%s", what, want, text)
			}
		}
	}
	d, err := newDaemon(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), daemonOptions{})
	if err == nil {
		d.store.Close()
		t.Fatal("the daemon was built on a damaged store")
	}
	hasAdvice("serve's error", err.Error())

	var out, errOut bytes.Buffer
	if code := run([]string{"store", "check", "--config", cfgPath}, &out, &errOut); code != 1 {
		t.Fatalf("store check of a damaged store exited %d\n%s%s", code, out.String(), errOut.String())
	}
	hasAdvice("store check", errOut.String())
}

func TestStoreCheckSoundStore(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeSmallConfig(t, dir, "")
	var out, errOut bytes.Buffer
	// No database yet: nothing to check, and nothing is created.
	if code := run([]string{"store", "check", "--config", cfgPath}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "no such file") {
		t.Fatalf("store check without a database: exit %d, %q", code, errOut.String())
	}
	db := filepath.Join(dir, "data", "certgate.db")
	os.Mkdir(filepath.Dir(db), 0o700)
	st, err := sqlite.Open(context.Background(), db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	out.Reset()
	if code := run([]string{"store", "check", "--db", db}, &out, &errOut); code != 0 || !strings.Contains(out.String(), db+": ok") {
		t.Fatalf("store check of a sound database: exit %d, %q", code, out.String())
	}
}
