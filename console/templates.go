package console

import (
	"html/template"
	"time"
)

// layout is every page's frame: plain, self-contained HTML with inline
// styles (the CSP allows nothing else), no scripts, readable without CSS.
// On a narrow screen tables turn into one card per row, each cell
// labelled, so that nothing scrolls sideways.
const layout = `{{define "layout"}}<!doctype html>
<html lang="{{.Lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{.Title}}</title>
<style>
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;background:#f4f5f7;color:#1d2330;margin:0;line-height:1.45;font-size:15px}
header{background:#1d2330;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center}
header a{color:#fff}
header .who{font-size:.85rem;color:#c9cfdb;flex:1 1 12rem;overflow-wrap:anywhere}
header form{margin:0}
main{max-width:72rem;margin:0 auto;padding:1rem}
section{background:#fff;border-radius:8px;padding:1rem;margin:0 0 1rem;box-shadow:0 1px 3px rgba(0,0,0,.12);overflow-wrap:anywhere}
h1{font-size:1.35rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:0 0 .6rem}
label{display:block;font-size:.85rem;color:#3a4150;margin:.3rem 0 .15rem}
input,select{font:inherit;padding:.45rem .5rem;border:1px solid #b8bfcc;border-radius:5px;max-width:100%;width:100%;background:#fff}
button{font:inherit;background:#0b5cad;color:#fff;border:0;border-radius:6px;padding:.55rem 1.1rem;min-height:44px;cursor:pointer}
button.quiet{background:#5a6272}
button.danger{background:#a3261b}
button:focus,input:focus,select:focus,a:focus{outline:3px solid #f5a623;outline-offset:2px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(11rem,1fr));gap:.5rem 1rem;align-items:end}
.act{display:flex;flex-wrap:wrap;gap:.4rem;align-items:end;margin:.3rem 0}
.act input{flex:1 1 10rem;width:auto}
.notice{background:#e3f3e6;border-left:4px solid #2d7a3e;padding:.6rem .8rem;margin:0 0 1rem}
.error{background:#fbe6e4;border-left:4px solid #a3261b;padding:.6rem .8rem;margin:0 0 1rem}
.muted{color:#5a6272;font-size:.85rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;vertical-align:top;padding:.4rem .5rem;border-bottom:1px solid #e3e6eb}
th{background:#eef0f4;font-weight:600}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}
dt{color:#5a6272}
dd{margin:0}
.state{font-weight:600}
.state-held,.state-pending,.state-paused,.state-suspended{color:#8a5a00}
.state-delivered,.state-enabled,.state-normal{color:#2d7a3e}
.state-bounced,.state-revoked{color:#a3261b}
@media (max-width:44rem){
 table,thead,tbody,tr,th,td{display:block}
 thead{display:none}
 tr{border:1px solid #e3e6eb;border-radius:6px;margin:0 0 .6rem;padding:.3rem}
 td{border:0;padding:.2rem .3rem}
 td[data-label]::before{content:attr(data-label);display:block;font-size:.75rem;color:#5a6272}
 dl{grid-template-columns:1fr}
 dt{margin-top:.4rem}
}
</style>
</head>
<body>
{{if .Who}}<header>
<strong>certgate</strong>
<a href="/console/">{{.L.nav_search}}</a>
<a href="/console/lanes">{{.L.nav_lanes}}</a>
<span class="who">{{.L.signed_in_as}} <b>{{.Who.Name}}</b> · {{.L.scopes}}: {{.Who.Scopes}} · {{.L.tenants}}: {{.Who.Tenants}}</span>
<form method="post" action="/console/signout"><input type="hidden" name="csrf" value="{{.CSRF}}"><button class="quiet" type="submit">{{.L.signout}}</button></form>
</header>{{end}}
<main>
{{if .Notice}}<p class="notice" role="status">{{.Notice}}</p>{{end}}
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
{{template "body" .}}
</main>
</body>
</html>{{end}}`

const signInPage = `{{define "body"}}<section>
<h1>{{.L.title_signin}}</h1>
<p>{{.L.signin_lead}}</p>
<form method="post" action="/console/signin" autocomplete="off">
<label for="token">{{.L.token}}</label>
<input id="token" name="token" type="password" required maxlength="512" autocomplete="off">
<p><button type="submit">{{.L.signin}}</button></p>
</form>
</section>{{end}}`

const searchPage = `{{define "body"}}{{with .Body}}<section>
<h1>{{$.Title}}</h1>
<form method="get" action="/console/">
<div class="grid">
<div><label for="q">{{$.L.search_label}}</label><input id="q" name="q" value="{{.Form.Q}}" maxlength="256"></div>
<div><label for="in">{{$.L.search_in}}</label><select id="in" name="in">{{range .In}}<option value="{{.Value}}"{{if .Selected}} selected{{end}}>{{.Label}}</option>{{end}}</select></div>
<div><label for="state">{{$.L.state}}</label><select id="state" name="state">{{range .States}}<option value="{{.Value}}"{{if .Selected}} selected{{end}}>{{.Label}}</option>{{end}}</select></div>
<div><label for="since">{{$.L.since}}</label><input id="since" name="since" type="datetime-local" value="{{.Form.Since}}"></div>
<div><label for="until">{{$.L.until}}</label><input id="until" name="until" type="datetime-local" value="{{.Form.Until}}"></div>
<div><button type="submit">{{$.L.search}}</button></div>
</div>
</form>
</section>
{{if .Ran}}<section>
{{if .Results}}<table>
<thead><tr><th>{{$.L.col_received}}</th><th>{{$.L.col_subject}}</th><th>{{$.L.col_from}}</th><th>{{$.L.col_tenant}}</th></tr></thead>
<tbody>{{range .Results}}<tr>
<td data-label="{{$.L.col_received}}">{{when .ReceivedAt}}</td>
<td data-label="{{$.L.col_subject}}"><a href="/console/messages/{{.ID}}">{{if .Subject}}{{.Subject}}{{else}}{{.ID}}{{end}}</a></td>
<td data-label="{{$.L.col_from}}">{{.HeaderFrom}}</td>
<td data-label="{{$.L.col_tenant}}">{{.Tenant}}</td>
</tr>{{end}}</tbody>
</table>
{{if .Next}}<p><a href="{{.Next}}">{{$.L.next_page}}</a></p>{{end}}
{{else}}<p>{{$.L.no_results}}</p>{{end}}
</section>{{end}}{{end}}{{end}}`

const messagePage = `{{define "body"}}{{with .Body}}<section>
<h1>{{if .M.Subject}}{{.M.Subject}}{{else}}{{$.L.message}} {{.M.ID}}{{end}}</h1>
<dl>
<dt>ID</dt><dd>{{.M.ID}}</dd>
<dt>{{$.L.message_id}}</dt><dd>{{.M.MessageID}}</dd>
<dt>{{$.L.col_from}}</dt><dd>{{.M.HeaderFrom}}</dd>
<dt>{{$.L.envelope_from}}</dt><dd>{{.M.MailFrom}}</dd>
<dt>{{$.L.col_tenant}}</dt><dd>{{.M.Tenant}}</dd>
<dt>{{$.L.class}}</dt><dd>{{.M.Class}}</dd>
<dt>{{$.L.col_received}}</dt><dd>{{when .M.ReceivedAt}}</dd>
<dt>{{$.L.size}}</dt><dd>{{.M.Size}}</dd>
</dl>
{{if .CanRelease}}<form class="act" method="post" action="/console/messages/{{.M.ID}}/release">
<input type="hidden" name="csrf" value="{{$.CSRF}}">
<label class="muted" for="release-reason">{{$.L.release_lead}} {{$.L.reason}}</label>
<input id="release-reason" name="reason" required maxlength="200">
<button type="submit">{{$.L.release}}</button>
</form>{{end}}
</section>
<section>
<h2>{{$.L.recipients}}</h2>
<table>
<thead><tr><th>{{$.L.col_address}}</th><th>{{$.L.col_state}}</th><th>{{$.L.col_attempts}}</th><th>{{$.L.col_last_reply}}</th><th>{{$.L.placement}}</th></tr></thead>
<tbody>{{range .Recipients}}<tr>
<td data-label="{{$.L.col_address}}">{{.Address}}{{if .Seed}} <span class="muted">({{$.L.seed}} {{.Seed}})</span>{{end}}</td>
<td data-label="{{$.L.col_state}}"><span class="state state-{{.State}}">{{.StateText}}</span>{{if .Next}}<br><span class="muted">{{$.L.col_next}}: {{.Next}}</span>{{end}}{{if .Held}}<br><span class="muted">{{$.L.held_in}} {{.Held}}</span>{{end}}</td>
<td data-label="{{$.L.col_attempts}}">{{.Attempts}}</td>
<td data-label="{{$.L.col_last_reply}}">{{if .LastCode}}{{.LastCode}} {{end}}{{.LastReply}}{{if .Provider}} <span class="muted">({{.Provider}})</span>{{end}}</td>
<td data-label="{{$.L.placement}}">{{with .Placement}}<b>{{.Folder}}</b> <span class="muted">{{.Provider}}</span>{{if not .ArrivedAt.IsZero}}<br>{{$.L.arrived}} {{when .ArrivedAt}}{{end}}{{range .Moves}}<br>{{$.L.moves}} {{.From}} → {{.To}} {{when .At}}{{end}}{{end}}</td>
</tr>{{end}}</tbody>
</table>
</section>
<section>
<h2>{{$.L.attempts}}</h2>
{{if .Attempts}}<table>
<thead><tr><th>{{$.L.col_time}}</th><th>{{$.L.col_address}}</th><th>{{$.L.col_kind}}</th><th>{{$.L.col_last_reply}}</th></tr></thead>
<tbody>{{range .Attempts}}<tr>
<td data-label="{{$.L.col_time}}">{{when .Time}}</td>
<td data-label="{{$.L.col_address}}">{{.Recipient}}</td>
<td data-label="{{$.L.col_kind}}"><span class="state state-{{.Kind}}">{{.Kind}}</span></td>
<td data-label="{{$.L.col_last_reply}}">{{.Detail}}</td>
</tr>{{end}}</tbody>
</table>{{else}}<p class="muted">{{$.L.no_attempts}}</p>{{end}}
</section>
{{if .Links}}<section>
<h2>{{$.L.links}}</h2>
<table>
<thead><tr><th>{{$.L.col_address}}</th><th>{{$.L.col_link}}</th><th>{{$.L.col_state}}</th><th>{{$.L.col_uses}}</th><th>{{$.L.col_expires}}</th><th>{{$.L.col_refusals}}</th></tr></thead>
<tbody>{{range .Links}}<tr class="link">
<td data-label="{{$.L.col_address}}">{{.Recipient}}</td>
<td data-label="{{$.L.col_link}}">{{.Origin}}</td>
<td data-label="{{$.L.col_state}}"><span class="state state-{{.State}} link-state">{{.State}}</span>
{{if .CanRevoke}}<form class="act" method="post" action="/console/messages/{{$.Body.M.ID}}/revoke"><input type="hidden" name="csrf" value="{{$.CSRF}}"><input type="hidden" name="recipient" value="{{.Recipient}}"><input name="reason" required maxlength="200" aria-label="{{$.L.reason}}" placeholder="{{$.L.reason}}"><button class="danger" type="submit">{{$.L.revoke}}</button></form>{{end}}
{{if .CanEnable}}<form class="act" method="post" action="/console/messages/{{$.Body.M.ID}}/enable"><input type="hidden" name="csrf" value="{{$.CSRF}}"><input type="hidden" name="recipient" value="{{.Recipient}}"><input name="reason" required maxlength="200" aria-label="{{$.L.reason}}" placeholder="{{$.L.reason}}"><button type="submit">{{$.L.enable}}</button></form>{{end}}</td>
<td data-label="{{$.L.col_uses}}">{{.Uses}}{{if .MaxUses}} / {{.MaxUses}}{{end}}</td>
<td data-label="{{$.L.col_expires}}">{{when .ExpiresAt}}</td>
<td data-label="{{$.L.col_refusals}}">{{.Refusals.Count}}</td>
</tr>{{end}}</tbody>
</table>
</section>{{end}}
<section>
<h2>{{$.L.events}}</h2>
<table>
<thead><tr><th>{{$.L.col_time}}</th><th>{{$.L.col_kind}}</th><th>{{$.L.col_actor}}</th><th>{{$.L.col_address}}</th><th>{{$.L.col_detail}}</th></tr></thead>
<tbody>{{range .Events}}<tr>
<td data-label="{{$.L.col_time}}">{{when .Time}}</td>
<td data-label="{{$.L.col_kind}}">{{.Kind}}{{if gt .Count 1}} ×{{.Count}}{{end}}</td>
<td data-label="{{$.L.col_actor}}">{{.Actor}}</td>
<td data-label="{{$.L.col_address}}">{{.Recipient}}</td>
<td data-label="{{$.L.col_detail}}">{{.Detail}}</td>
</tr>{{end}}</tbody>
</table>
{{if .Older}}<p><a href="{{.Older}}">{{$.L.older_events}}</a></p>{{end}}
</section>{{end}}{{end}}`

const lanesPage = `{{define "body"}}{{with .Body}}<section>
<h1>{{$.Title}}</h1>
{{if not .CanChange}}<p class="muted">{{$.L.lanes_readonly}}</p>{{end}}
{{if .Lanes}}<table>
<thead><tr><th>{{$.L.col_lane}}</th><th>{{$.L.col_state}}</th><th>{{$.L.col_rate}}</th><th>{{$.L.col_configured}}</th><th>{{$.L.col_queue}}</th>{{if .Reasons}}<th>{{$.L.col_reason}}</th>{{end}}<th>{{$.L.col_until}}</th></tr></thead>
<tbody>{{range .Lanes}}<tr>
<td data-label="{{$.L.col_lane}}">{{.Name}}{{if ne .Name .Provider}} <span class="muted">({{.Provider}})</span>{{end}}</td>
<td data-label="{{$.L.col_state}}"><span class="state state-{{.State}}">{{.State}}</span>
{{if $.Body.CanChange}}<form class="act" method="post" action="/console/lanes/{{.Name}}/{{if .Paused}}resume{{else}}pause{{end}}"><input type="hidden" name="csrf" value="{{$.CSRF}}"><input name="reason" required maxlength="200" aria-label="{{$.L.reason}}" placeholder="{{$.L.reason}}"><button {{if not .Paused}}class="danger" {{end}}type="submit">{{if .Paused}}{{$.L.resume}}{{else}}{{$.L.pause}}{{end}}</button></form>{{end}}</td>
<td data-label="{{$.L.col_rate}}">{{.RateText}}</td>
<td data-label="{{$.L.col_configured}}">{{.ConfiguredText}}</td>
<td data-label="{{$.L.col_queue}}">{{.Due}}</td>
{{if $.Body.Reasons}}<td data-label="{{$.L.col_reason}}">{{.Reason}}</td>{{end}}
<td data-label="{{$.L.col_until}}">{{when .Until}}</td>
</tr>{{end}}</tbody>
</table>{{else}}<p>{{$.L.no_lanes}}</p>{{end}}
</section>{{end}}{{end}}`

// emptyPage is a page whose message (Notice or Error) says it all.
const emptyPage = `{{define "body"}}{{if not .Who}}<p><a href="/console/">{{.L.title_signin}}</a></p>{{end}}{{end}}`

// when shows a time in UTC to the second; nothing for the zero time.
func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// pages are the console's templates by name, each the layout with its body.
var pages = func() map[string]*template.Template {
	base := template.Must(template.New("layout").Funcs(template.FuncMap{"when": when}).Parse(layout))
	out := map[string]*template.Template{}
	for name, body := range map[string]string{"signin": signInPage, "search": searchPage, "message": messagePage, "lanes": lanesPage, "empty": emptyPage} {
		out[name] = template.Must(template.Must(base.Clone()).Parse(body))
	}
	return out
}()
