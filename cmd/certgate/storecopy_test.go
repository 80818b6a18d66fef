package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/internal/testpg"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/postgres"
	"github.com/certgate/certgate/store/sqlite"
)

// writeDSN writes dsn to a 0600 file in a temporary directory.
func writeDSN(t *testing.T, dsn string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "pg.dsn")
	if err := os.WriteFile(f, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// withPassword puts a password into a DSN of testpg (whose server trusts
// loopback, so the password is carried and never checked): what must
// never show in certgate's output.
func withPassword(t *testing.T, dsn, password string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

// tables are every table a copy moves, with the columns that order their
// rows.
var tables = map[string]string{
	"messages": "id", "contents": "id", "recipients": "id", "events": "id", "links": "id",
	"cursors": "name", "placements": "recipient_id", "seed_folders": "seed, mailbox",
	"lane_states": "lane", "idempotency_keys": "key",
}

// base is when the spool's mail came in, in whole microseconds.
var copyBase = time.Date(2026, 5, 4, 10, 11, 12, 131415000, time.UTC)

// fillSpool makes a SQLite spool at path through the store's API with a
// message in every state, links (used and refused), events (the newest
// deleted), cursors, an idempotency key, a lane state and a seed copy
// that was found; it returns the message ids and the highest event id
// the spool gave.
func fillSpool(t *testing.T, path string) (ids []string, lastEvent int64) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	body := [][]byte{[]byte("Subject: cert\r\n\r\nyour certificate\r\n"), []byte("Subject: other\r\n\r\n\x00binary\xff\r\n")}
	n := 0
	enqueue := func(m store.Message, rcpts ...store.NewRecipient) []int64 {
		t.Helper()
		n++
		m.ID = fmt.Sprintf("0%d-copy", n)
		m.Tenant, m.Class, m.MailFrom, m.HeaderFrom = "issuer", "transactional", "b@ca.example", "c@ca.example"
		m.MessageID, m.Subject, m.ClientAddr, m.AuthUser = m.ID+"@relay", "Your certificate ☺", "192.0.2.1", "app"
		m.ReceivedAt = copyBase.Add(time.Duration(n) * time.Minute)
		rids, err := st.Enqueue(ctx, m, body, rcpts)
		must(err)
		ids = append(ids, m.ID)
		return rids
	}
	link := func(label string, state store.LinkState) store.NewLink {
		return store.NewLink{TokenHash: sha256.Sum256([]byte(label)), URL: "https://ca.example/dl/" + label,
			State: state, MaxUses: 3, ExpiresAt: copyBase.Add(30 * 24 * time.Hour)}
	}
	copyTo := func(addr string, state store.State, links ...store.NewLink) store.NewRecipient {
		r := store.NewCopy(addr, state, copyBase.Add(time.Hour))
		r.Links = links
		return r
	}

	// queued, with an enabled link used once and refused once
	enqueue(store.Message{}, copyTo("q@x.example", store.StateQueued, link("q", store.LinkEnabled)), copyTo("q2@Y.example", store.StateQueued))
	l, err := st.LinkByToken(ctx, sha256.Sum256([]byte("q")))
	must(err)
	_, err = st.UseLink(ctx, l.ID, copyBase.Add(2*time.Hour), "gate:198.51.100.7", "download")
	must(err)
	_, err = st.RefuseLink(ctx, l.ID, store.LinkRefusal{Time: copyBase.Add(3 * time.Hour), Reason: "scanner", Client: "203.0.113.9", UserAgent: "bot"}, "gate")
	must(err)
	// held, its link pending
	enqueue(store.Message{}, copyTo("h@x.example", store.StateHeld, link("h", store.LinkPending)))
	// delivered, its link enabled on delivery
	rid := enqueue(store.Message{}, copyTo("d@x.example", store.StateQueued, link("d", store.LinkPending)))
	must(st.RecordAttempt(ctx, store.Attempt{RecipientID: rid[0], MessageID: "03-copy", Time: copyBase.Add(time.Hour), State: store.StateDelivered,
		Provider: "gmail", Host: "mx.x.example", Code: 250, Reply: "2.0.0 OK", EnableLinks: true}))
	// deferred, then bounced
	rid = enqueue(store.Message{}, copyTo("b@x.example", store.StateQueued))
	must(st.RecordAttempt(ctx, store.Attempt{RecipientID: rid[0], MessageID: "04-copy", Time: copyBase.Add(time.Hour), State: store.StateQueued,
		NextAttempt: copyBase.Add(2 * time.Hour), Provider: "outlook", Code: 451, Reply: "4.7.0 try later"}))
	must(st.RecordAttempt(ctx, store.Attempt{RecipientID: rid[0], MessageID: "04-copy", Time: copyBase.Add(3 * time.Hour), State: store.StateBounced,
		Provider: "outlook", Code: 550, Reply: "5.1.1 no such user"}))
	// sent through the API with an Idempotency-Key
	key := sha256.Sum256([]byte(`{"to":"k@x.example"}`))
	_, err = st.ReserveKey(ctx, "tok:abc", key, copyBase, copyBase.Add(24*time.Hour))
	must(err)
	enqueue(store.Message{Submitter: "api:app", Note: "via the send API", Idempotency: &store.IdempotentAnswer{Key: "tok:abc", BodyHash: key,
		Status: 202, Response: []byte(`{"id":"05-copy"}`), Expires: copyBase.Add(24 * time.Hour)}},
		copyTo("k@x.example", store.StateQueued))
	// a seed copy, delivered and found in the junk folder
	seed := copyTo("seed@gmail.example", store.StateQueued)
	seed.Seed, seed.SeedProvider = "gmail-1", "gmail"
	rid = enqueue(store.Message{}, seed)
	must(st.RecordAttempt(ctx, store.Attempt{RecipientID: rid[0], MessageID: "06-copy", Time: copyBase.Add(time.Hour), State: store.StateDelivered,
		Provider: "gmail", Code: 250, Reply: "2.0.0 OK"}))
	_, err = st.RecordFound(ctx, rid[0], store.Found{Folder: store.FolderJunk, Mailbox: "[Gmail]/Spam", UIDValidity: 7, UID: 42,
		ArrivedAt: copyBase.Add(time.Hour), DetectedAt: copyBase.Add(2 * time.Hour), Verdicts: json.RawMessage(`{"spf":"pass"}`)})
	must(err)
	must(st.SetSeedFolder(ctx, "gmail-1", "[Gmail]/Spam", 7, 42))
	must(st.SaveLaneStates(ctx, map[string][]byte{"gmail": []byte(`{"paused":true}`)}))
	must(st.AddLaneEvent(ctx, "gmail", store.Event{Time: copyBase.Add(time.Hour), Kind: "lane_changed", Actor: "api:ops", Detail: "paused"}))
	must(st.AddEvent(ctx, store.Event{MessageID: "01-copy", Time: copyBase.Add(time.Hour), Kind: "note", Actor: "helpdesk", Detail: "called the customer"}))
	// The newest event, old by its time, is deleted: its id must never
	// come back, not after the copy either.
	must(st.AddEvent(ctx, store.Event{MessageID: "02-copy", Time: copyBase.Add(-time.Hour), Kind: "note", Actor: "x", Detail: "old"}))
	evs, err := st.EventsAfter(ctx, 0, 1000)
	must(err)
	lastEvent = evs[len(evs)-1].ID
	if deleted, err := st.DeleteEvents(ctx, copyBase, 1); err != nil || deleted != 1 {
		t.Fatalf("DeleteEvents = %d, %v", deleted, err)
	}
	must(st.SetCursor(ctx, "webhook:crm", lastEvent-2))
	must(st.SetCursor(ctx, "webhook:ops", lastEvent))
	return ids, lastEvent
}

// dump reads a table's rows as text, in key order, for comparing two
// stores' tables column by column whatever the driver's Go types.
func dump(t *testing.T, query func(string) ([][]any, error), table string) []string {
	t.Helper()
	rows, err := query(table)
	if err != nil {
		t.Fatalf("%s: %v", table, err)
	}
	var out []string
	for _, r := range rows {
		var b strings.Builder
		for _, v := range r {
			switch x := v.(type) {
			case []byte:
				v = string(x)
			case int32:
				v = int64(x)
			}
			fmt.Fprintf(&b, "%#v|", v)
		}
		out = append(out, b.String())
	}
	return out
}

// The copy moves every row of every table, and PostgreSQL's store then
// answers as SQLite's did; new ids go on above the copied ones.
func TestStoreCopyKeepsEverything(t *testing.T) {
	srv := testpg.Start(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "certgate.db")
	ids, lastEvent := fillSpool(t, path)
	dsn := srv.NewDB(t)
	counts, err := copySpool(ctx, path, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != len(tables) {
		t.Errorf("counts for %d tables, want %d: %v", len(counts), len(tables), counts)
	}
	for _, c := range counts {
		if c.Rows == 0 {
			t.Errorf("table %s: no rows copied; the test should fill every table", c.Table)
		}
	}

	// Every column of every row, as stored.
	lite, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for table, key := range tables {
		cols := sqliteColumns(t, path, table)
		q := "SELECT " + strings.Join(cols, ", ") + " FROM " + table + " ORDER BY " + key
		want := dump(t, func(string) ([][]any, error) { return sqliteRows(path, q) }, table)
		got := dump(t, func(string) ([][]any, error) {
			rows, err := conn.Query(ctx, q)
			if err != nil {
				return nil, err
			}
			return pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
		}, table)
		if !slices.Equal(got, want) {
			t.Errorf("table %s differs:\nPostgreSQL %q\nSQLite     %q", table, got, want)
		}
	}

	pg, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	// What the store API answers, through the readers both have.
	var maxRcpt, maxLink int64
	for _, id := range ids {
		a, err := lite.Message(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		b, err := pg.Message(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(emptyAsNil(a), emptyAsNil(b)) {
			t.Errorf("message %s:\nPostgreSQL %+v\nSQLite     %+v", id, b, a)
		}
		for _, r := range a.Recipients {
			maxRcpt = max(maxRcpt, r.ID)
		}
		for _, l := range a.Links {
			maxLink = max(maxLink, l.ID)
		}
	}
	for _, q := range []store.Query{{Limit: 500}, {State: store.StateHeld}, {State: store.StateBounced}, {Recipient: "q2@y.example"}} {
		a, err1 := lite.Search(ctx, q)
		b, err2 := pg.Search(ctx, q)
		if err1 != nil || err2 != nil || !reflect.DeepEqual(a, b) || len(a) == 0 {
			t.Errorf("Search(%+v):\nPostgreSQL %v %v\nSQLite     %v %v", q, b, err2, a, err1)
		}
	}
	a, err1 := lite.EventsAfter(ctx, 0, 1000)
	b, err2 := pg.EventsAfter(ctx, 0, 1000)
	if err1 != nil || err2 != nil || !reflect.DeepEqual(a, b) {
		t.Errorf("EventsAfter:\nPostgreSQL %+v %v\nSQLite     %+v %v", b, err2, a, err1)
	}
	for _, name := range []string{"webhook:crm", "webhook:ops", "never"} {
		a, err1 := lite.Cursor(ctx, name)
		b, err2 := pg.Cursor(ctx, name)
		if err1 != nil || err2 != nil || a != b {
			t.Errorf("Cursor(%s) = %d, %v; SQLite's %d, %v", name, b, err2, a, err1)
		}
	}
	pending := func(s store.Store) []store.Pending {
		var out []store.Pending
		if err := s.Pending(ctx, func(p store.Pending) error { out = append(out, p); return nil }); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(out, func(a, b store.Pending) int { return int(a.RecipientID - b.RecipientID) })
		return out
	}
	if a, b := pending(lite), pending(pg); !reflect.DeepEqual(a, b) || len(a) == 0 {
		t.Errorf("Pending:\nPostgreSQL %+v\nSQLite     %+v", b, a)
	}

	// New rows get ids above every copied one, and above the deleted event.
	r := store.NewCopy("new@x.example", store.StateQueued, copyBase)
	r.Links = []store.NewLink{{TokenHash: sha256.Sum256([]byte("new")), URL: "https://ca.example/new", State: store.LinkPending}}
	rids, err := pg.Enqueue(ctx, store.Message{ID: "99-new", Tenant: "issuer", Class: "bulk", ReceivedAt: copyBase}, [][]byte{[]byte("x")}, []store.NewRecipient{r})
	if err != nil {
		t.Fatalf("Enqueue after the copy: %v", err)
	}
	v, err := pg.Message(ctx, "99-new")
	if err != nil {
		t.Fatal(err)
	}
	if rids[0] <= maxRcpt || v.Links[0].ID <= maxLink || v.Events[0].ID <= lastEvent {
		t.Errorf("new ids: recipient %d (copied up to %d), link %d (up to %d), event %d (the spool gave up to %d)",
			rids[0], maxRcpt, v.Links[0].ID, maxLink, v.Events[0].ID, lastEvent)
	}
}

// emptyAsNil makes a view's empty lists nil: the backends differ there,
// and a caller cannot tell.
func emptyAsNil(v *store.MessageView) *store.MessageView {
	if len(v.Links) == 0 {
		v.Links = nil
	}
	for i := range v.Links {
		if len(v.Links[i].Refusals.Recent) == 0 {
			v.Links[i].Refusals.Recent = nil
		}
	}
	return v
}

// sqliteColumns lists a table's columns in the spool.
func sqliteColumns(t *testing.T, path, table string) []string {
	t.Helper()
	rows, err := sqliteRows(path, "SELECT name FROM pragma_table_info('"+table+"') ORDER BY cid")
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, r := range rows {
		cols = append(cols, r[0].(string))
	}
	return cols
}

// sqliteRows runs a query on the spool, read-only.
func sqliteRows(path, query string) ([][]any, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.Query(query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out = append(out, vals)
	}
	return out, rows.Err()
}

// runOut runs certgate with args and returns its exit status and everything
// it printed, which must never hold the DSN's password.
func runOut(t *testing.T, password string, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := run(args, &out, &out)
	if password != "" && strings.Contains(out.String(), password) {
		t.Errorf("certgate %s printed the DSN's password:\n%s", strings.Join(args, " "), out.String())
	}
	return code, out.String()
}

func TestStoreCopyCommand(t *testing.T) {
	srv := testpg.Start(t)
	const password = "hunter2-Zq9"
	path := filepath.Join(t.TempDir(), "certgate.db")
	fillSpool(t, path)
	dsn := withPassword(t, srv.NewDB(t), password)
	dsnFile := writeDSN(t, dsn)

	code, out := runOut(t, password, "store", "copy", "--from-sqlite", path, "--to-dsn-file", dsnFile)
	if code != 0 || !strings.Contains(out, "messages           6\n") || !strings.Contains(out, "copied ") {
		t.Fatalf("store copy: exit %d\n%s", code, out)
	}
	// Again: the database has mail now, and is left as it is.
	code, out = runOut(t, password, "store", "copy", "--from-sqlite", path, "--to-dsn-file", dsnFile)
	if code != 1 || !strings.Contains(out, "not empty") || !strings.Contains(out, "messages") {
		t.Fatalf("store copy into a database with mail: exit %d\n%s", code, out)
	}
	pg, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ms, err := pg.Search(context.Background(), store.Query{Limit: 500}); len(ms) != 6 || err != nil {
		t.Errorf("after the refused copy PostgreSQL has %d messages (%v), want 6", len(ms), err)
	}
	pg.Close()

	// The environment, into a new database.
	t.Setenv("CERTGATE_TEST_DSN", withPassword(t, srv.NewDB(t), password))
	if code, out := runOut(t, password, "store", "copy", "--from-sqlite", path, "--to-dsn-env", "CERTGATE_TEST_DSN"); code != 0 {
		t.Fatalf("store copy --to-dsn-env: exit %d\n%s", code, out)
	}

	// A server that does not answer: the error names no secret.
	t.Setenv("CERTGATE_TEST_DSN", "postgres://certgate:"+password+"@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
	if code, out := runOut(t, password, "store", "copy", "--from-sqlite", path, "--to-dsn-env", "CERTGATE_TEST_DSN"); code != 1 {
		t.Fatalf("store copy to a closed port: exit %d\n%s", code, out)
	}

	// A spool a running certgate holds is refused (Linux can tell).
	if runtime.GOOS == "linux" {
		st, err := sqlite.Open(context.Background(), path, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		code, out := runOut(t, password, "store", "copy", "--from-sqlite", path, "--to-dsn-file", writeDSN(t, srv.NewDB(t)))
		st.Close()
		if code != 1 || !strings.Contains(out, "stop it first") {
			t.Errorf("store copy of a spool in use: exit %d\n%s", code, out)
		}
	}

	// Usage: no DSN on the command line, one source of it.
	for _, args := range [][]string{
		{"store", "copy", "--from-sqlite", path, dsn},
		{"store", "copy", "--from-sqlite", path},
		{"store", "copy", "--from-sqlite", path, "--to-dsn-file", dsnFile, "--to-dsn-env", "X"},
		{"store", "copy", "--to-dsn-file", dsnFile},
	} {
		if code, out := runOut(t, password, args...); code != 2 {
			t.Errorf("certgate %s: exit %d, want 2\n%s", strings.Join(args, " "), code, out)
		}
	}
}

func TestStoreMigrateCommand(t *testing.T) {
	srv := testpg.Start(t)
	const password = "hunter2-Zq9"
	dir := t.TempDir()
	dsnFile := writeDSN(t, withPassword(t, srv.NewDB(t), password))
	cfgPath := writeSmallConfig(t, dir, "storage: {driver: postgres, dsn_file: "+dsnFile+"}\n")
	code, out := runOut(t, password, "store", "migrate", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "version: 0 before, 2 now") {
		t.Fatalf("store migrate of a new database: exit %d\n%s", code, out)
	}
	if code, out := runOut(t, password, "store", "migrate", "--config", cfgPath); code != 0 || !strings.Contains(out, "version: 2 before, 2 now") {
		t.Fatalf("store migrate again: exit %d\n%s", code, out)
	}
	// serve opens it too.
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := openStore(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	// A server that does not answer.
	if err := os.WriteFile(dsnFile, []byte("postgres://certgate:"+password+"@127.0.0.1:1/none?connect_timeout=2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := runOut(t, password, "store", "migrate", "--config", cfgPath); code != 1 {
		t.Fatalf("store migrate with no server: exit %d\n%s", code, out)
	}

	// SQLite: nothing to do.
	sqliteCfg := writeSmallConfig(t, t.TempDir(), "")
	if code, out := runOut(t, "", "store", "migrate", "--config", sqliteCfg); code != 0 || !strings.Contains(out, "at start") {
		t.Fatalf("store migrate on sqlite: exit %d\n%s", code, out)
	}
}
