package sim

import (
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// session is one SMTP session; go-smtp starts a new one after STARTTLS.
type session struct {
	p     *Provider
	c     *smtp.Conn
	conn  *conn // the accepted connection under any TLS layer
	from  string
	rcpts []string
	inTx  bool // counted in p.busy
}

func (p *Provider) newSession(c *smtp.Conn) (smtp.Session, error) {
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	cn, _ := nc.(*conn)
	return &session{p: p, c: c, conn: cn}, nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.p.mu.Lock()
	closing := s.p.closing
	if !closing && !s.inTx {
		s.inTx = true
		s.p.busy++
	}
	s.p.mu.Unlock()
	if closing {
		return s.reject(errClosing)
	}
	s.from, s.rcpts = from, nil
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	p := s.p
	domain := strings.ToLower(to[strings.LastIndexByte(to, '@')+1:])
	if len(p.domains) > 0 && !p.domains[domain] {
		return s.reject(errRelay)
	}
	if e := s.distrustRcpt(); e != nil {
		p.log.Debug("throttled for distrust", "rcpt", to)
		return s.reply(e)
	}
	if !p.allow() {
		p.count(&p.stats.RateLimited)
		p.log.Debug("rate limited", "rcpt", to)
		return s.reply(errRate)
	}
	if err := s.rcptFault(to); err != nil {
		return err
	}
	if p.opts.Respond != nil {
		if e := p.opts.Respond(s.from, to); e != nil && e.Code >= 400 {
			return s.reject(e)
		}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	p := s.p
	fault := noFault
	if len(s.rcpts) > 0 {
		fault = s.dataFault()
	}
	if fault == fDropMidData {
		io.Copy(io.Discard, io.LimitReader(r, midDataBytes))
		s.conn.Close()
		return errHungUp
	}
	data, err := io.ReadAll(r)
	if err != nil {
		if se, ok := errors.AsType[*smtp.SMTPError](err); ok {
			return s.reject(se)
		}
		return s.reject(errRead)
	}
	if len(s.rcpts) == 0 {
		return s.reject(errNoRcpt)
	}

	bareLF, bareCR, maxLine := lineFacts(data)
	results := p.verifyDKIM(data)
	_, isTLS := s.c.TLSConnectionState()
	now := p.now()
	msgs := make([]Message, len(s.rcpts))
	for i, rcpt := range s.rcpts {
		msgs[i] = Message{
			Provider: p.opts.Name,
			From:     s.from,
			To:       rcpt,
			Data:     data,
			Received: now,
			Folder:   "INBOX",
			DKIM:     results,
			BareLF:   bareLF,
			BareCR:   bareCR,
			MaxLine:  maxLine,
			TLS:      isTLS,
			EHLO:     s.c.Hostname(),
		}
	}

	var scripted *smtp.SMTPError
	if p.opts.DataRespond != nil {
		for i := range msgs {
			if e := p.opts.DataRespond(&msgs[i]); e != nil && scripted == nil {
				scripted = e
			}
		}
	}
	if scripted != nil && scripted.Code >= 400 {
		return s.reject(scripted)
	}
	switch fault {
	case fData451:
		return errFault451
	case fData550:
		return errFaultData550
	}
	p.store(s.conn, msgs)
	p.log.Debug("accepted", "from", s.from, "rcpts", s.rcpts, "bytes", len(data), "tls", isTLS, "fault", fault)
	switch fault {
	case fDropAfterData:
		s.conn.Close()
		return errHungUp
	case fStallAfterData:
		p.hangUp(s.conn, p.opts.Faults.stall())
		return errHungUp
	}
	if scripted != nil {
		return scripted // a scripted 2xx text
	}
	return nil
}

// reject counts a refusal and replies with e.
func (s *session) reject(e *smtp.SMTPError) error {
	s.p.count(&s.p.stats.Rejected)
	s.p.log.Debug("rejected", "from", s.from, "code", e.Code, "text", e.Message)
	return s.reply(e)
}

// reply returns e for go-smtp to send, except that a 421 is written here and
// the connection closed, since go-smtp would keep it open. This runs on the
// connection's own goroutine, so the write cannot interleave with another.
func (s *session) reply(e *smtp.SMTPError) error {
	if e.Code == 421 {
		nc := s.c.Conn()
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(nc, replyLine(e))
		nc.Close()
	}
	return e
}

func (s *session) Reset() {
	s.from, s.rcpts = "", nil
	s.endTx()
}

func (s *session) Logout() error {
	s.endTx()
	return nil
}

// endTx runs on the session's goroutine or, at shutdown, on go-smtp's; p.mu
// orders the two.
func (s *session) endTx() {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	if s.inTx {
		s.inTx = false
		s.p.busy--
		s.p.notify()
	}
}
