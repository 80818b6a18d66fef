package dnscheck

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certgate/certgate/dnscheck/dnstest"
)

func resolverOf(z *dnstest.Server, timeout time.Duration) *Resolver {
	return &Resolver{Addr: z.Addr, Timeout: timeout}
}

func TestResolverBounds(t *testing.T) {
	var many []string
	for i := 0; i < MaxRecords+20; i++ {
		many = append(many, "many.example. 300 IN TXT \"r"+strings.Repeat("x", i)+"\"")
	}
	z := dnstest.New(t, many...)
	big := `big.example. 300 IN TXT` + strings.Repeat(` "`+strings.Repeat("b", 255)+`"`, MaxTXTBytes/255+1)
	z.Add(t, big,
		"tc.example. 300 IN TXT \"over tcp\"",
		"c0.example. 300 IN CNAME c1.example.",
	)
	for i := 1; i <= MaxCNAMEs+1; i++ {
		z.Add(t, "c"+strconv.Itoa(i)+".example. 300 IN CNAME c"+strconv.Itoa(i+1)+".example.")
	}
	z.Add(t, "c"+strconv.Itoa(MaxCNAMEs+2)+".example. 300 IN TXT \"end\"",
		"short.example. 300 IN CNAME target.other.example.",
		"target.other.example. 300 IN TXT \"followed\"",
		"target.other.example. 300 IN A 192.0.2.9",
		"stray.example. 300 IN TXT \"mine\"")
	z.Truncate("tc.example", "big.example")
	z.Slow("slow.example")
	r := resolverOf(z, time.Second)
	ctx := context.Background()

	got, err := r.LookupTXT(ctx, "many.example")
	if err != nil || len(got) != MaxRecords {
		t.Errorf("many: %d records, %v; want the first %d", len(got), err, MaxRecords)
	}
	if _, err := r.LookupTXT(ctx, "big.example"); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("big TXT: %v, want refused", err)
	}
	if got, err := r.LookupTXT(ctx, "tc.example"); err != nil || len(got) != 1 || got[0] != "over tcp" {
		t.Errorf("truncated over UDP: %q, %v; want the TCP answer", got, err)
	}
	if z.Count("tc.example", "TXT") != 2 {
		t.Errorf("tc.example asked %d times, want UDP then TCP", z.Count("tc.example", "TXT"))
	}
	if _, err := r.LookupTXT(ctx, "c0.example"); err == nil || !strings.Contains(err.Error(), "CNAME chain") {
		t.Errorf("long CNAME chain: %v, want refused", err)
	}
	if got, err := r.LookupTXT(ctx, "short.example"); err != nil || len(got) != 1 || got[0] != "followed" {
		t.Errorf("CNAME: %q, %v", got, err)
	}
	if got, err := r.LookupIPAddr(ctx, "short.example"); err != nil || len(got) != 1 || got[0].IP.String() != "192.0.2.9" {
		t.Errorf("A through CNAME: %v, %v", got, err)
	}
	var de *net.DNSError
	if _, err := r.LookupTXT(ctx, "nothing.example"); !asDNSError(err, &de) || !de.IsNotFound {
		t.Errorf("NXDOMAIN: %v, want IsNotFound", err)
	}
	if _, err := r.LookupMX(ctx, "stray.example"); !asDNSError(err, &de) || !de.IsNotFound {
		t.Errorf("no MX at an existing name: %v, want IsNotFound", err)
	}
	r.Timeout = 50 * time.Millisecond
	if _, err := r.LookupTXT(ctx, "slow.example"); !asDNSError(err, &de) || !de.IsTimeout || !de.Temporary() {
		t.Errorf("slow: %v, want a temporary timeout", err)
	}
}

func asDNSError(err error, de **net.DNSError) bool {
	e, ok := err.(*net.DNSError)
	*de = e
	return ok
}

func TestSystemResolver(t *testing.T) {
	addr, err := SystemResolver()
	if err != nil {
		t.Skipf("no usable /etc/resolv.conf here: %v", err)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Errorf("SystemResolver = %q: %v", addr, err)
	}
}
