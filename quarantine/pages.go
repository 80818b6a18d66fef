package quarantine

import (
	"html/template"
	"maps"
	"slices"

	"github.com/certgate/certgate/internal/lang"
)

// page is what the gate shows for one link state, in one language.
type page struct {
	Lang, Title, Lead string
	Steps             []string
	Button            string // set when the page offers the download
	Support           string // "Need help? Write to" ...
}

// texts are the gate's words. Pending explains, per mail program, how a
// person marks the mail safe, because that is what turns the link on.
var texts = map[string]map[string]page{
	"en": {
		"enabled": {Title: "Your download is ready", Lead: "Press the button to download your certificate. The link is personal: do not forward it.", Button: "Download"},
		"pending": {Title: "This link is not active yet", Lead: "For your security, the download opens once the message that brought it has been marked safe.",
			Steps: []string{"Find the message in your Junk or Spam folder, or in quarantine.", "Outlook: select it and choose “Not junk” (links in the Junk folder are disabled).", "Gmail: open it and choose “Report not spam”.", "Other mail: move it to your Inbox, or ask your mail administrator to release it.", "Then open this link again from the message."}},
		"used":     {Title: "This link has been used", Lead: "It can no longer be used. If you did not download the certificate, ask for a new link."},
		"expired":  {Title: "This link has expired", Lead: "Download links are valid for a limited time. Ask for a new link."},
		"revoked":  {Title: "This link has been withdrawn", Lead: "It was turned off by the issuer. Ask for a new link if you still need the certificate."},
		"invalid":  {Title: "This link is not valid", Lead: "Check that you opened the whole link from the message."},
		"tooquick": {Title: "Please press the button", Lead: "Press the button below to continue to your download.", Button: "Download"},
		"support":  {Support: "Need help? Contact"},
	},
	"es": {
		"enabled": {Title: "Su descarga está lista", Lead: "Presione el botón para descargar su certificado. El enlace es personal: no lo reenvíe.", Button: "Descargar"},
		"pending": {Title: "Este enlace aún no está activo", Lead: "Por su seguridad, la descarga se habilita cuando el mensaje que la trajo se marca como seguro.",
			Steps: []string{"Busque el mensaje en la carpeta de correo no deseado (spam) o en cuarentena.", "Outlook: selecciónelo y elija «No es correo no deseado» (los enlaces en esa carpeta están deshabilitados).", "Gmail: ábralo y elija «Informar de que no es spam».", "Otros programas: muévalo a la bandeja de entrada o pida a su administrador de correo que lo libere.", "Luego vuelva a abrir este enlace desde el mensaje."}},
		"used":     {Title: "Este enlace ya fue utilizado", Lead: "Ya no puede usarse. Si no descargó el certificado, solicite un enlace nuevo."},
		"expired":  {Title: "Este enlace venció", Lead: "Los enlaces de descarga valen por un tiempo limitado. Solicite un enlace nuevo."},
		"revoked":  {Title: "Este enlace fue retirado", Lead: "El emisor lo desactivó. Solicite un enlace nuevo si aún necesita el certificado."},
		"invalid":  {Title: "Este enlace no es válido", Lead: "Verifique que abrió el enlace completo desde el mensaje."},
		"tooquick": {Title: "Presione el botón", Lead: "Presione el botón para continuar con su descarga.", Button: "Descargar"},
		"support":  {Support: "¿Necesita ayuda? Escriba a"},
	},
	"pt": {
		"enabled": {Title: "Seu download está pronto", Lead: "Pressione o botão para baixar seu certificado. O link é pessoal: não o encaminhe.", Button: "Baixar"},
		"pending": {Title: "Este link ainda não está ativo", Lead: "Para sua segurança, o download é liberado quando a mensagem que o trouxe for marcada como segura.",
			Steps: []string{"Procure a mensagem na pasta de lixo eletrônico (spam) ou na quarentena.", "Outlook: selecione-a e escolha “Não é lixo eletrônico” (links nessa pasta ficam desativados).", "Gmail: abra-a e escolha “Informar que não é spam”.", "Outros programas: mova-a para a Caixa de entrada ou peça ao administrador de e-mail que a libere.", "Depois abra este link novamente a partir da mensagem."}},
		"used":     {Title: "Este link já foi utilizado", Lead: "Ele não pode mais ser usado. Se você não baixou o certificado, peça um novo link."},
		"expired":  {Title: "Este link expirou", Lead: "Os links de download valem por tempo limitado. Peça um novo link."},
		"revoked":  {Title: "Este link foi retirado", Lead: "O emissor o desativou. Peça um novo link se ainda precisar do certificado."},
		"invalid":  {Title: "Este link não é válido", Lead: "Verifique se você abriu o link completo a partir da mensagem."},
		"tooquick": {Title: "Pressione o botão", Lead: "Pressione o botão para continuar para o seu download.", Button: "Baixar"},
		"support":  {Support: "Precisa de ajuda? Escreva para"},
	},
	"fr": {
		"enabled": {Title: "Votre téléchargement est prêt", Lead: "Appuyez sur le bouton pour télécharger votre certificat. Le lien est personnel : ne le transférez pas.", Button: "Télécharger"},
		"pending": {Title: "Ce lien n’est pas encore actif", Lead: "Pour votre sécurité, le téléchargement s’ouvre lorsque le message qui l’a apporté est marqué comme sûr.",
			Steps: []string{"Cherchez le message dans le dossier Courrier indésirable (spam) ou en quarantaine.", "Outlook : sélectionnez-le et choisissez « Courrier légitime » (les liens de ce dossier sont désactivés).", "Gmail : ouvrez-le et choisissez « Signaler comme non-spam ».", "Autres logiciels : déplacez-le dans la boîte de réception ou demandez à votre administrateur de messagerie de le libérer.", "Puis rouvrez ce lien depuis le message."}},
		"used":     {Title: "Ce lien a déjà été utilisé", Lead: "Il ne peut plus servir. Si vous n’avez pas téléchargé le certificat, demandez un nouveau lien."},
		"expired":  {Title: "Ce lien a expiré", Lead: "Les liens de téléchargement sont valables pour une durée limitée. Demandez un nouveau lien."},
		"revoked":  {Title: "Ce lien a été retiré", Lead: "L’émetteur l’a désactivé. Demandez un nouveau lien si vous avez encore besoin du certificat."},
		"invalid":  {Title: "Ce lien n’est pas valide", Lead: "Vérifiez que vous avez ouvert le lien complet depuis le message."},
		"tooquick": {Title: "Appuyez sur le bouton", Lead: "Appuyez sur le bouton pour continuer vers votre téléchargement.", Button: "Télécharger"},
		"support":  {Support: "Besoin d’aide ? Écrivez à"},
	},
}

// pickLanguage returns the first of the gate's languages the browser asks
// for, English when none.
func pickLanguage(acceptLanguage string) string {
	return lang.Pick(acceptLanguage, gateLanguages, "en")
}

// gateLanguages are the gate's languages, the keys of texts.
var gateLanguages = slices.Sorted(maps.Keys(texts))

// gateTemplate is plain, self-contained HTML: no scripts, no external
// assets, readable without CSS, and large enough to press on a phone.
var gateTemplate = template.Must(template.New("gate").Parse(`<!doctype html>
<html lang="{{.Lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;background:#f4f5f7;color:#1d2330;margin:0;padding:2rem 1rem;line-height:1.5}
main{max-width:34rem;margin:0 auto;background:#fff;border-radius:8px;padding:2rem;box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.4rem;margin:0 0 1rem}
ol{padding-left:1.3rem}
button{font:inherit;font-size:1.1rem;background:#0b5cad;color:#fff;border:0;border-radius:6px;padding:.8rem 1.6rem;cursor:pointer}
button:focus{outline:3px solid #f5a623;outline-offset:2px}
.issuer{color:#5a6272;font-size:.9rem;margin-bottom:1.5rem}
.support{margin-top:1.5rem;font-size:.95rem;color:#3a4150;overflow-wrap:anywhere}
.support a{color:#0b5cad}
.support a[href^="tel:"]{white-space:nowrap}
</style>
</head>
<body>
<main>
{{if .Issuer}}<p class="issuer">{{.Issuer}}</p>{{end}}
<h1>{{.Title}}</h1>
<p>{{.Lead}}</p>
{{if .Steps}}<ol>{{range .Steps}}<li>{{.}}</li>{{end}}</ol>{{end}}
{{if .Button}}<form method="post" action="{{.Action}}"><input type="hidden" name="n" value="{{.Nonce}}"><button type="submit">{{.Button}}</button></form>{{end}}
{{if .Contacts}}<p class="support">{{.Support}} {{range $i, $c := .Contacts}}{{if $i}} · {{end}}{{if $c.Href}}<a href="{{$c.Href}}">{{$c.Text}}</a>{{else}}{{$c.Text}}{{end}}{{end}}</p>{{end}}
</main>
</body>
</html>
`))
