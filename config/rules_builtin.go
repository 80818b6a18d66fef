package config

import "time"

// Built-in reply rules, for the replies the providers document. They come
// after every configured rule, so a configured rule of the same match
// replaces one. Each says why in its reason.

func hours(h int) Duration   { return Duration(time.Duration(h) * time.Hour) }
func minutes(m int) Duration { return Duration(time.Duration(m) * time.Minute) }

// exchangeThrottled is Exchange Online's throttling, which Outlook.com's
// servers send too.
var exchangeThrottled = ReplyRule{Name: "exchange-throttled", Match: `^451 4\.7\.(5\d\d|6\d\d) .*\(AS\d+\)`, Action: ActionSlow,
	Factor: 0.5, For: minutes(15), Reason: "Exchange Online throttles the sender (451 4.7.500-699, ASxxx)"}

var builtinRules = map[string][]ReplyRule{
	"gmail": {
		{Name: "gmail-rate-limit", Match: `^421 4\.7\.28 `, Action: ActionSlow, Factor: 0.5, For: minutes(10),
			Reason: "Gmail limits mail from this sender for its reputation (421 4.7.28): send slower"},
		{Name: "gmail-unsolicited", Match: `^(550 5\.7\.1|421 4\.7\.0) .*(?i:unsolicited|reputation|spam)`, Action: ActionSlow,
			Factor: 0.5, For: minutes(30), Alert: true,
			Reason: "Gmail judges the mail unsolicited or the sender's reputation low: slow down and look at Postmaster Tools"},
		{Name: "gmail-authentication", Match: `^[45]\d\d [45]\.7\.(2[3-7]|3[02]) `, Action: ActionSuspend, PerTenant: true,
			For: hours(1), Defer: true, Alert: true,
			Reason: "Gmail refuses mail that fails authentication (SPF, PTR, DKIM, DMARC, alignment: 4.7.23-27, 4.7.30, 4.7.32); slowing cannot fix DNS, so the tenant's bulk waits until it is fixed"},
		{Name: "gmail-per-user", Match: `^450 4\.2\.1 `, Action: ActionIgnore,
			Reason: "Gmail's per-user rate (450 4.2.1) concerns one recipient, not the lane"},
	},
	"outlook": {
		{Name: "outlook-ip-reputation", Match: `^451 4\.7\.650 `, Action: ActionSlow, Factor: 0.5, For: minutes(15),
			Reason: "Outlook.com throttles for the sending IP's reputation (451 4.7.650)"},
		{Name: "outlook-blocklist", Match: `^550 5\.7\.1 .*S31[45]0`, Action: ActionDefer, Alert: true,
			Reason: "Outlook.com has the sending IP on its block list (S3140, S3150): retry rather than bounce, and ask for delisting"},
		{Name: "outlook-authentication", Match: `^550 5\.7\.515 `, Action: ActionSuspend, PerTenant: true,
			For: hours(1), Defer: true, Alert: true,
			Reason: "Outlook.com requires SPF, DKIM and DMARC of bulk senders (5.7.515): the tenant's bulk waits until DNS is fixed"},
		exchangeThrottled,
	},
	"microsoft365": {exchangeThrottled},
	"yahoo": {
		{Name: "yahoo-throttled", Match: `^421 4\.7\.0 \[TSS04\]`, Action: ActionSlow, Factor: 0.5, For: minutes(30),
			Reason: "Yahoo defers mail for complaints or reputation ([TSS04])"},
		{Name: "yahoo-blocked", Match: `^553 5\.7\.2 \[TSS09\]`, Action: ActionDefer, Alert: true,
			Reason: "Yahoo blocks the sending IP for a time ([TSS09]): retry rather than bounce"},
		{Name: "yahoo-authentication", Match: `^550 5\.7\.9 `, Action: ActionSuspend, PerTenant: true,
			For: hours(1), Defer: true, Alert: true,
			Reason: "Yahoo refuses mail that fails its authentication requirements (5.7.9): the tenant's bulk waits until DNS is fixed"},
	},
}

// genericRules apply to every provider, last: greylisting is no reason to
// slow down; any other 421/451 4.7.x is throttling, and halves the rate
// for five minutes (what certgate always did, now with a gradual way
// back).
var genericRules = []ReplyRule{
	{Name: "greylisting", Match: `^4\d\d .*(?i:gr[ae]y-?list)`, Action: ActionIgnore,
		Reason: "greylisting (RFC 6647) asks for a later retry of one message, not a slower sender"},
	{Name: "throttled", Match: `^(421|451) 4\.7\.`, Action: ActionSlow, Factor: 0.5, For: minutes(5),
		Reason: "the receiver throttles (421/451 4.7.x)"},
}

// BuiltinRules are the built-in rules of a provider, its own then the
// generic ones, with their defaults applied.
func BuiltinRules(provider string) []ReplyRule {
	var out []ReplyRule
	out = append(out, builtinRules[provider]...)
	out = append(out, genericRules...)
	for i := range out {
		r := &out[i]
		if r.Threshold.Count == 0 {
			r.Threshold.Count = 1
		}
		if r.Action == ActionSlow && r.Floor.Count == 0 {
			r.Floor = DefaultRuleFloor
		}
	}
	return out
}
