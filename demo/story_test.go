package demo

import (
	"strings"
	"testing"
	"time"
)

// sec is t0 plus s seconds.
func sec(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func ptime(s float64) *time.Time { t := sec(s); return &t }

func prate(r float64) *float64 { return &r }

// lanePhase is a lane's state from a time on.
type lanePhase struct {
	from   float64 // seconds after t0
	view   laneView
	reason string
	since  float64
	until  float64
}

// laneAt is the lane as the phases have it at s seconds.
func laneAt(name string, configured float64, phases []lanePhase, s float64) laneView {
	v := laneView{Name: name, State: "normal", Rate: prate(configured), Configured: prate(configured)}
	for _, p := range phases {
		if s < p.from {
			break
		}
		v = laneView{Name: name, State: p.view.State, Rate: p.view.Rate, Configured: prate(configured), Reason: p.reason}
		if p.since != 0 {
			v.Since = ptime(p.since)
		}
		if p.until != 0 {
			v.Until = ptime(p.until)
		}
	}
	return v
}

func slowed(r float64) laneView { return laneView{State: "slowed", Rate: prate(r)} }
func normal(r float64) laneView { return laneView{State: "normal", Rate: prate(r)} }

const (
	outlookReason   = "outlook-ip-reputation: Outlook.com throttles for the sending IP's reputation (451 4.7.650)"
	placementReason = "placement: seed copies: 40% of the last 5 in the inbox, under 50%"
	throttledReason = "throttled: the receiver throttles (421/451 4.7.x)"
)

// The story of a run as the demo sees it: Microsoft pushed from +0.8s,
// 14 refusals, calm at +4.4s; the outlook lane cut at +0.9s (and again
// at +1.2s by the same rule), held by its placement rule at +4.2s until
// +14.2s, climbing back from there; microsoft365 cut too, and back first.
func storySamples() []loopSample {
	outlook := []lanePhase{
		{from: 1.0, view: slowed(7.5), reason: outlookReason, since: 0.9, until: 10.9},
		{from: 1.5, view: slowed(7.5), reason: outlookReason, since: 1.2, until: 11.2},
		{from: 4.5, view: slowed(7.5), reason: placementReason, since: 4.2, until: 14.2},
		{from: 18.5, view: slowed(11.25), reason: placementReason, since: 4.2, until: 14.2},
		{from: 22.5, view: normal(15), reason: placementReason, since: 4.2},
	}
	m365 := []lanePhase{
		{from: 1.0, view: slowed(10), reason: throttledReason, since: 0.95, until: 11.4},
		{from: 15.5, view: slowed(15), reason: throttledReason, since: 0.95, until: 11.4},
		{from: 19.5, view: normal(20), reason: throttledReason, since: 0.95},
	}
	var out []loopSample
	for s := 0.0; s <= 23; s += 0.5 {
		smp := loopSample{at: sec(s), lanes: map[string]laneView{
			"outlook":      laneAt("outlook", 15, outlook, s),
			"microsoft365": laneAt("microsoft365", 20, m365, s),
			"gmail":        laneAt("gmail", 30, nil, s),
		}}
		switch {
		case s >= 1 && s < 4.5:
			smp.pushed, smp.since = true, sec(0.8)
		case s >= 4.5:
			smp.since = sec(4.4)
		}
		switch {
		case s >= 1.5:
			smp.throttled = 14
		case s >= 1:
			smp.throttled = 9
		}
		out = append(out, smp)
	}
	return out
}

func seedAt(s float64, folder string) seedCopy {
	return seedCopy{Seed: "outlook-1", Provider: "outlook", Folder: folder, DeliveredAt: ptime(s)}
}

func storySeeds() []seedCopy {
	return []seedCopy{
		seedAt(0.1, "inbox"), seedAt(0.5, "inbox"),
		seedAt(1.1, "junk"), seedAt(2.0, "junk"), seedAt(3.0, "junk"),
		seedAt(5.0, "inbox"), seedAt(6.0, "inbox"), seedAt(7.0, "inbox"), seedAt(8.0, "inbox"), seedAt(9.0, "inbox"),
	}
}

// The section tells the measured story in time order, each line from
// what the demo saw: Microsoft's own account of its refusals and calm,
// the lanes' rules at their times, the climb as the samples saw it, the
// seed copies before, while and after the push, and the urgent mail.
func TestPrintLoop(t *testing.T) {
	st := loopStory{
		started: t0, samples: storySamples(), calm: 3 * time.Second, limit: 25, seeds: storySeeds(),
		urgent: []urgentCopy{
			{accepted: sec(2), received: sec(2.031), inbox: true},
			{accepted: sec(3), received: sec(3.0404), inbox: true},
		},
		urgents: 2, lastCopy: sec(9.3),
	}
	var l lines
	printLoop(l.out, st)
	want := `
closed loop at Microsoft (outlook lane; times from the wave's start, the lanes API and Microsoft looked at every 500ms)
  +0.1s   seed copies in the inbox before Microsoft was pushed: 2 of 2
  +0.8s   Microsoft answered 451 4.7.650 (rate limited for IP reputation): 14 times, the last at +1.4s; pushed, it files bulk in junk
  +0.9s   certgate slowed the outlook lane 15/s -> 7.5/s (rule outlook-ip-reputation)
  +0.9s   certgate slowed the microsoft365 lane too (the same Microsoft servers) 20/s -> 10/s (rule throttled); back to 20/s at +19.5s
  +1.1s   seed copies filed in Junk while Microsoft was pushed: 3 of 3
  +4.2s   seed copies: 40% of the last 5 in the inbox, under 50%: certgate keeps the outlook lane at 7.5/s until +14.2s (rule placement)
  +4.4s   Microsoft calm again: no refusal for 3s
  +5.0s   seed copies back in the inbox: 5 of 5 delivered after it calmed
  +9.3s   the wave's last copy reached Microsoft
  +14.2s  slowdown over; the rate climbs back: 11.25/s at +18.5s, then 15/s at +22.5s
  urgent tokens to Microsoft meanwhile: 2 of 2 delivered, in the inbox, 31ms and 40ms after their 250, both while certgate's lanes to Microsoft were slowed
`
	if l.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", l.String(), want)
	}
}

// A wave too small to push Microsoft tells so, and that nothing changed.
func TestPrintLoopUnpushed(t *testing.T) {
	var samples []loopSample
	for s := 0.0; s <= 2; s += 0.5 {
		samples = append(samples, loopSample{at: sec(s), lanes: map[string]laneView{
			"outlook": laneAt("outlook", 15, nil, s), "microsoft365": laneAt("microsoft365", 20, nil, s)}})
	}
	st := loopStory{started: t0, samples: samples, calm: 3 * time.Second, limit: 25,
		seeds:  []seedCopy{seedAt(0.2, "inbox")},
		urgent: []urgentCopy{{accepted: sec(1), received: sec(1.02), inbox: true}}, urgents: 1, lastCopy: sec(1.5)}
	var l lines
	printLoop(l.out, st)
	want := `
closed loop at Microsoft (outlook lane; times from the wave's start, the lanes API and Microsoft looked at every 500ms)
  Microsoft refused nothing: the wave never came to more than 25 recipients a second there
  the outlook lane kept its 15/s
  +0.2s   seed copies in the inbox: 1 of 1
  urgent tokens to Microsoft meanwhile: 1 of 1 delivered, in the inbox, 20ms after their 250
`
	if l.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", l.String(), want)
	}
}

// A story cut short says what was still going on: Microsoft still pushed,
// the lane still slowed; a lane already slowed at the first look says so.
func TestPrintLoopUnfinished(t *testing.T) {
	outlook := []lanePhase{{from: 0, view: slowed(7.5), reason: outlookReason, since: -1, until: 9}}
	var samples []loopSample
	for s := 0.0; s <= 2; s += 0.5 {
		samples = append(samples, loopSample{at: sec(s), lanes: map[string]laneView{"outlook": laneAt("outlook", 15, outlook, s)},
			pushed: true, since: sec(-1.5), throttled: 40})
	}
	st := loopStory{started: t0, samples: samples, calm: 3 * time.Second, limit: 25,
		seeds:   []seedCopy{seedAt(0.5, "junk"), seedAt(1, "inbox"), {Seed: "outlook-1", Provider: "outlook", Folder: "pending"}},
		urgents: 1}
	var l lines
	printLoop(l.out, st)
	want := `
closed loop at Microsoft (outlook lane; times from the wave's start, the lanes API and Microsoft looked at every 500ms)
  -1.5s   Microsoft answered 451 4.7.650 (rate limited for IP reputation): 40 times; pushed, it files bulk in junk
  +0.0s   the outlook lane is slowed at 7.5/s of 15/s (` + outlookReason + `)
  +0.5s   seed copies filed in Junk while Microsoft was pushed: 1 of 2
  +2.0s   Microsoft still pushed when the demo stopped looking
  +2.0s   the outlook lane still slowed at 7.5/s of 15/s when the demo stopped looking
  urgent tokens to Microsoft meanwhile: 0 of 1 delivered
`
	if l.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", l.String(), want)
	}
}

// Pushes take their times from Microsoft and their refusals from the
// samples around them; a second push counts only its own.
func TestPushes(t *testing.T) {
	samples := []loopSample{
		{at: sec(0), throttled: 0},
		{at: sec(1), pushed: true, since: sec(0.8), throttled: 5},
		{at: sec(2), pushed: true, since: sec(0.8), throttled: 7},
		{at: sec(5), since: sec(4.5), throttled: 7},
		{at: sec(6), pushed: true, since: sec(5.5), throttled: 10},
		{at: sec(7), pushed: true, since: sec(5.5), throttled: 12},
	}
	got := pushes(samples)
	want := []push{{start: sec(0.8), end: sec(4.5), refused: 7}, {start: sec(5.5), refused: 5}}
	if len(got) != len(want) {
		t.Fatalf("pushes %+v; want %+v", got, want)
	}
	for i := range want {
		if !got[i].start.Equal(want[i].start) || !got[i].end.Equal(want[i].end) || got[i].refused != want[i].refused {
			t.Errorf("push %d: %+v; want %+v", i, got[i], want[i])
		}
	}
}

// The lane's changes: the cut at the rule's time, one event however often
// the same rule acts again, the climb back told from the slowdown's end;
// a second cut during the climb ends that climb's line.
func TestLaneChanges(t *testing.T) {
	phases := []lanePhase{
		{from: 1, view: slowed(7.5), reason: outlookReason, since: 0.9, until: 5},
		{from: 2, view: slowed(7.5), reason: outlookReason, since: 1.9, until: 6},
		{from: 7, view: slowed(11.25), reason: outlookReason, since: 1.9, until: 6},
		{from: 8, view: slowed(5.625), reason: outlookReason, since: 7.8, until: 12},
		{from: 14, view: slowed(9.375), reason: outlookReason, since: 7.8, until: 12},
		{from: 16, view: normal(15), reason: outlookReason, since: 7.8},
	}
	var samples []loopSample
	for s := 0.0; s <= 17; s++ {
		samples = append(samples, loopSample{at: sec(s), lanes: map[string]laneView{"outlook": laneAt("outlook", 15, phases, s)}})
	}
	lc := laneChanges(samples, "outlook", t0)
	var got []string
	for _, e := range lc.events {
		got = append(got, rel(e.at, t0)+" "+e.text)
	}
	want := []string{
		"+0.9s certgate slowed the outlook lane 15/s -> 7.5/s (rule outlook-ip-reputation)",
		"+6.0s slowdown over; the rate climbs back: 11.25/s at +7.0s",
		"+7.8s certgate slowed the outlook lane 11.25/s -> 5.625/s (rule outlook-ip-reputation)",
		"+12.0s slowdown over; the rate climbs back: 9.375/s at +14.0s, then 15/s at +16.0s",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !lc.slowed.Equal(sec(0.9)) || !lc.whole.Equal(sec(16)) {
		t.Errorf("slowed %s, whole %s; want +0.9s and +16.0s", rel(lc.slowed, t0), rel(lc.whole, t0))
	}
}

// Seed copies after a calm that are not all in the inbox are counted as
// they are, not as a recovery.
func TestSeedEventsAfterCalm(t *testing.T) {
	ps := []push{{start: sec(1), end: sec(4)}}
	evs := seedEvents([]seedCopy{seedAt(2, "junk"), seedAt(5, "inbox"), seedAt(6, "junk"), seedAt(7, "other:Archive")}, ps)
	var got []string
	for _, e := range evs {
		got = append(got, rel(e.at, t0)+" "+e.text)
	}
	want := "+2.0s seed copies filed in Junk while Microsoft was pushed: 1 of 1\n" +
		"+5.0s seed copies delivered after it calmed: 1 of 3 in the inbox (1 neither in the inbox nor in junk yet)"
	if strings.Join(got, "\n") != want {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
}

// Many urgent mails are told by their percentiles.
func TestUrgentLineMany(t *testing.T) {
	st := loopStory{urgents: 5}
	for i := range 4 {
		st.urgent = append(st.urgent, urgentCopy{accepted: sec(float64(i)), received: sec(float64(i) + 0.01*float64(i+1)), inbox: i != 3})
	}
	lane := laneChange{slowed: sec(0.5), whole: sec(2.5)}
	want := "urgent tokens to Microsoft meanwhile: 4 of 5 delivered, 3 in the inbox, p50 20ms, max 40ms after their 250, 2 of them while certgate's lanes to Microsoft were slowed"
	if got := urgentLine(st, []laneChange{lane, {}}); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// The wait's status line: the lanes to Microsoft and Microsoft now.
func TestLoopStatus(t *testing.T) {
	s := storySamples()[4] // +2.0s
	want := "outlook lane slowed 7.5/s of 15/s until +11.2s, microsoft365 lane slowed 10/s of 20/s until +11.4s; Microsoft pushed since +0.8s"
	if got := loopStatus(s, t0); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	s = storySamples()[40] // +20.0s
	want = "outlook lane slowed 11.25/s of 15/s, microsoft365 lane 20/s; Microsoft calm"
	if got := loopStatus(s, t0); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if settled(s) || !settled(storySamples()[45]) {
		t.Errorf("settled at +20s %v, at +22.5s %v; want false, true", settled(s), settled(storySamples()[45]))
	}
}
