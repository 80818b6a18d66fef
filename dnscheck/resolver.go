package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Bounds on what one DNS answer may make the checker hold or do. Every
// answer is hostile: it may come from a zone the issuer does not run (an
// include: of SPF, a CNAME to a provider), or be forged on the path.
const (
	// MaxRecords is the most records of one type taken from an answer;
	// the rest are ignored. RFC 7208 4.6.4 caps MX hosts at 10, and no
	// record set the checker reads needs more.
	MaxRecords = 32
	// MaxTXTBytes is the longest TXT value (its strings joined) read: a
	// DKIM record of a 4096-bit RSA key is about 800 bytes. Longer values
	// make the lookup fail.
	MaxTXTBytes = 4096
	// MaxCNAMEs is the longest CNAME chain followed within one answer.
	MaxCNAMEs = 8
	// DefaultTimeout bounds one exchange with the resolver.
	DefaultTimeout = 5 * time.Second
)

// Resolver asks one recursive resolver, over UDP with EDNS0 and over TCP
// when the answer is truncated. Its Lookup methods have the shape of
// net.Resolver's, so the SPF library evaluates with it, and they report
// errors as *net.DNSError (IsNotFound for NXDOMAIN and for no records,
// IsTimeout and IsTemporary for timeouts and SERVFAIL), which is how the
// library tells "none" from "temperror" (RFC 7208 4.3, 5).
type Resolver struct {
	Addr    string        // host:port of the recursive resolver
	Timeout time.Duration // per exchange; DefaultTimeout when zero
}

// SystemResolver is the first nameserver of /etc/resolv.conf, on its port.
func SystemResolver() (string, error) {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return "", fmt.Errorf("reading /etc/resolv.conf: %w", err)
	}
	if len(cc.Servers) == 0 {
		return "", errors.New("/etc/resolv.conf names no nameserver")
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}

func (r *Resolver) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultTimeout
}

// exchange sends one query, with the DO bit when dnssec is set, and
// retries over TCP when the UDP answer is truncated (RFC 7766 5).
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16, dnssec bool) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.RecursionDesired = true
	q.SetEdns0(4096, dnssec)
	if dnssec {
		q.AuthenticatedData = true // RFC 6840 5.7: ask for the AD bit
	}
	var resp *dns.Msg
	var err error
	for _, network := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: network, Timeout: r.timeout(), UDPSize: 4096}
		qctx, cancel := context.WithTimeout(ctx, r.timeout())
		resp, _, err = c.ExchangeContext(qctx, q, r.Addr)
		cancel()
		if err != nil || !resp.Truncated {
			break
		}
	}
	if err != nil {
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
		return nil, &net.DNSError{Err: err.Error(), Name: name, Server: r.Addr, IsTimeout: timeout, IsTemporary: true}
	}
	if resp.Id != q.Id {
		return nil, &net.DNSError{Err: "answer does not match the query", Name: name, Server: r.Addr, IsTemporary: true}
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
		return resp, nil
	case dns.RcodeNameError:
		return resp, notFound(name, r.Addr)
	default:
		return nil, &net.DNSError{Err: "server answered " + dns.RcodeToString[resp.Rcode], Name: name, Server: r.Addr,
			IsTemporary: resp.Rcode == dns.RcodeServerFailure}
	}
}

func notFound(name, server string) *net.DNSError {
	return &net.DNSError{Err: "no such record", Name: name, Server: server, IsNotFound: true}
}

// lookup returns the records of qtype that answer name: those owned by
// name or by the end of a CNAME chain from it (at most MaxCNAMEs long),
// at most MaxRecords of them. No records is a not-found error, as
// net.Resolver reports it.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	resp, err := r.exchange(ctx, name, qtype, false)
	if err != nil {
		return nil, err
	}
	owner := dns.CanonicalName(name)
	for hops := 0; ; hops++ {
		next := ""
		for _, rr := range resp.Answer {
			if c, ok := rr.(*dns.CNAME); ok && dns.CanonicalName(c.Hdr.Name) == owner {
				next = dns.CanonicalName(c.Target)
				break
			}
		}
		if next == "" {
			break
		}
		if hops == MaxCNAMEs {
			return nil, &net.DNSError{Err: fmt.Sprintf("CNAME chain longer than %d", MaxCNAMEs), Name: name, Server: r.Addr}
		}
		owner = next
	}
	var out []dns.RR
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype == qtype && dns.CanonicalName(rr.Header().Name) == owner && len(out) < MaxRecords {
			out = append(out, rr)
		}
	}
	if len(out) == 0 {
		return nil, notFound(name, r.Addr)
	}
	return out, nil
}

// LookupTXT returns the TXT records at name, each one's strings joined
// (RFC 7208 3.3, RFC 6376 3.6.2.2).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		v := strings.Join(rr.(*dns.TXT).Txt, "")
		if len(v) > MaxTXTBytes {
			return nil, &net.DNSError{Err: fmt.Sprintf("a TXT record of %d bytes (more than %d)", len(v), MaxTXTBytes), Name: name, Server: r.Addr}
		}
		out = append(out, v)
	}
	return out, nil
}

// LookupMX returns the MX records at name, hosts without the final dot
// except the null MX's "." (RFC 7505).
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	var out []*net.MX
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		host := mx.Mx
		if host != "." {
			host = strings.TrimSuffix(host, ".")
		}
		out = append(out, &net.MX{Host: host, Pref: mx.Preference})
	}
	return out, nil
}

// LookupIPAddr returns host's IPv4 and IPv6 addresses.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	var out []net.IPAddr
	var firstErr error
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.lookup(ctx, host, qtype)
		var de *net.DNSError
		if err != nil && !(errors.As(err, &de) && de.IsNotFound) {
			return nil, err
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		for _, rr := range rrs {
			switch a := rr.(type) {
			case *dns.A:
				out = append(out, net.IPAddr{IP: a.A})
			case *dns.AAAA:
				out = append(out, net.IPAddr{IP: a.AAAA})
			}
		}
	}
	if len(out) == 0 {
		return nil, firstErr
	}
	return out, nil
}

// LookupAddr returns the PTR names of an address, with their final dot.
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: addr}
	}
	rrs, err := r.lookup(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// Authenticated asks for name's SOA with the DO bit and reports whether
// the resolver set AD: it validated the answer with DNSSEC (RFC 4035
// 3.2.3). A resolver that does not validate never sets it.
func (r *Resolver) Authenticated(ctx context.Context, name string) (bool, error) {
	resp, err := r.exchange(ctx, name, dns.TypeSOA, true)
	var de *net.DNSError
	if err != nil && !(errors.As(err, &de) && de.IsNotFound) {
		return false, err
	}
	return resp != nil && resp.AuthenticatedData, nil
}
