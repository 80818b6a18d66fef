package console

import (
	"maps"
	"net/http"
	"slices"

	"github.com/certgate/certgate/internal/lang"
)

// texts are the console's words by language, then by key; every language
// has every key (a test holds them to it). Texts that take a number have
// a %d.
var texts = map[string]map[string]string{
	"en": {
		"title_signin": "Helpdesk console", "signin_lead": "Sign in with your API token. The console then does what that token may do, for its tenants only.",
		"token": "API token", "signin": "Sign in", "signin_failed": "That token is not valid.",
		"signin_limited": "Too many failed sign-ins from here. Wait %d seconds, then try again.", "session_ended": "Your session has ended. Sign in again.",
		"signed_in_as": "Signed in as", "tenants": "tenants", "tenants_all": "all tenants", "scopes": "scopes",
		"nav_search": "Search", "nav_lanes": "Lanes", "signout": "Sign out", "signed_out": "You have signed out.",
		"search_label": "Recipient, subject or message ID", "search_in": "Look in", "in_auto": "Anything", "in_recipient": "Recipient",
		"in_subject": "Subject", "in_message_id": "Message ID", "state": "State", "state_any": "Any",
		"state_queued": "queued", "state_held": "held", "state_delivered": "delivered", "state_bounced": "bounced",
		"since": "From (UTC)", "until": "To (UTC)", "search": "Search", "no_results": "No mail found.",
		"col_received": "Received (UTC)", "col_tenant": "Tenant", "col_from": "From", "col_subject": "Subject", "col_to": "Recipients",
		"next_page": "Older mail", "err_text": "The search is too long or holds characters it cannot take.", "err_state": "Unknown state.",
		"err_time": "Write times as 2026-11-23T09:30 or 2026-11-23, in UTC.", "err_range": "The start must come before the end.",
		"message": "Message", "message_id": "Message-ID", "envelope_from": "Envelope sender", "class": "Class", "size": "Size (bytes)",
		"release": "Release", "release_lead": "Releasing marks the message safe: held copies are sent and pending links turn on.",
		"reason": "Reason (kept in the audit trail)", "recipients": "Recipients", "col_address": "Address", "col_state": "State",
		"col_attempts": "Attempts", "col_last_reply": "Last reply", "col_next": "Next attempt (UTC)", "held_in": "Held in lane",
		"seed": "seed mailbox", "placement": "Placement", "arrived": "arrived", "moves": "moved", "attempts": "Delivery attempts and replies",
		"no_attempts": "No attempt yet.", "links": "Download links", "col_link": "Link", "col_uses": "Uses", "col_expires": "Expires (UTC)",
		"col_refusals": "Refused presses", "revoke": "Revoke", "enable": "Re-enable", "events": "Audit trail", "col_time": "Time (UTC)",
		"col_kind": "Event", "col_actor": "Who", "col_detail": "Detail", "older_events": "Older events",
		"done_released": "Released: %d held copies queued for delivery.", "done_revoked": "Links revoked: %d.", "done_enabled": "Links re-enabled: %d.",
		"done_paused": "Lane paused.", "done_resumed": "Lane resumed.",
		"not_found": "No such message.", "forbidden": "Your token may not do this.", "form_expired": "This form has expired: open the page again.",
		"reason_required": "Give a reason: it goes into the audit trail.", "bad_form": "The form could not be read.",
		"lanes": "Delivery lanes", "col_lane": "Lane", "col_provider": "Provider", "col_rate": "Rate now", "col_configured": "Configured",
		"col_queue": "Due now", "col_reason": "Reason", "col_since": "Since (UTC)", "col_until": "Until (UTC)", "pause": "Pause", "resume": "Resume",
		"unlimited": "unlimited", "per_min": "/min", "no_lanes": "No lanes yet.", "lanes_readonly": "Read only: pausing and resuming a lane takes an admin token for every tenant.",
		"no_lane_control": "This certgate has no lanes to show.", "no_lane": "No such lane.", "internal": "Something went wrong; try again.", "nothing_here": "Nothing here.",
	},
	"es": {
		"title_signin": "Consola de mesa de ayuda", "signin_lead": "Ingrese con su token de API. La consola hace lo que ese token puede hacer, solo para sus clientes emisores.",
		"token": "Token de API", "signin": "Ingresar", "signin_failed": "Ese token no es válido.",
		"signin_limited": "Demasiados intentos fallidos desde aquí. Espere %d segundos y vuelva a intentarlo.", "session_ended": "Su sesión terminó. Ingrese de nuevo.",
		"signed_in_as": "Sesión de", "tenants": "emisores", "tenants_all": "todos los emisores", "scopes": "permisos",
		"nav_search": "Buscar", "nav_lanes": "Carriles", "signout": "Salir", "signed_out": "Cerró la sesión.",
		"search_label": "Destinatario, asunto o ID de mensaje", "search_in": "Buscar en", "in_auto": "Todo", "in_recipient": "Destinatario",
		"in_subject": "Asunto", "in_message_id": "ID de mensaje", "state": "Estado", "state_any": "Cualquiera",
		"state_queued": "en cola", "state_held": "retenido", "state_delivered": "entregado", "state_bounced": "rebotado",
		"since": "Desde (UTC)", "until": "Hasta (UTC)", "search": "Buscar", "no_results": "No se encontró correo.",
		"col_received": "Recibido (UTC)", "col_tenant": "Emisor", "col_from": "Remitente", "col_subject": "Asunto", "col_to": "Destinatarios",
		"next_page": "Correo anterior", "err_text": "La búsqueda es demasiado larga o tiene caracteres no admitidos.", "err_state": "Estado desconocido.",
		"err_time": "Escriba las horas como 2026-11-23T09:30 o 2026-11-23, en UTC.", "err_range": "El inicio debe ser anterior al fin.",
		"message": "Mensaje", "message_id": "Message-ID", "envelope_from": "Remitente del sobre", "class": "Clase", "size": "Tamaño (bytes)",
		"release": "Liberar", "release_lead": "Liberar marca el mensaje como seguro: las copias retenidas se envían y los enlaces pendientes se habilitan.",
		"reason": "Motivo (queda en la auditoría)", "recipients": "Destinatarios", "col_address": "Dirección", "col_state": "Estado",
		"col_attempts": "Intentos", "col_last_reply": "Última respuesta", "col_next": "Próximo intento (UTC)", "held_in": "Retenido en el carril",
		"seed": "buzón testigo", "placement": "Ubicación", "arrived": "llegó", "moves": "movido", "attempts": "Intentos de entrega y respuestas",
		"no_attempts": "Aún sin intentos.", "links": "Enlaces de descarga", "col_link": "Enlace", "col_uses": "Usos", "col_expires": "Vence (UTC)",
		"col_refusals": "Pulsaciones rechazadas", "revoke": "Revocar", "enable": "Rehabilitar", "events": "Auditoría", "col_time": "Hora (UTC)",
		"col_kind": "Evento", "col_actor": "Quién", "col_detail": "Detalle", "older_events": "Eventos anteriores",
		"done_released": "Liberado: %d copias retenidas pasaron a la cola de entrega.", "done_revoked": "Enlaces revocados: %d.", "done_enabled": "Enlaces rehabilitados: %d.",
		"done_paused": "Carril pausado.", "done_resumed": "Carril reanudado.",
		"not_found": "No existe ese mensaje.", "forbidden": "Su token no permite hacer esto.", "form_expired": "Este formulario venció: vuelva a abrir la página.",
		"reason_required": "Indique un motivo: queda en la auditoría.", "bad_form": "No se pudo leer el formulario.",
		"lanes": "Carriles de entrega", "col_lane": "Carril", "col_provider": "Proveedor", "col_rate": "Ritmo actual", "col_configured": "Configurado",
		"col_queue": "Pendientes ahora", "col_reason": "Motivo", "col_since": "Desde (UTC)", "col_until": "Hasta (UTC)", "pause": "Pausar", "resume": "Reanudar",
		"unlimited": "sin límite", "per_min": "/min", "no_lanes": "Aún no hay carriles.", "lanes_readonly": "Solo lectura: pausar y reanudar un carril requiere un token admin para todos los emisores.",
		"no_lane_control": "Este certgate no tiene carriles para mostrar.", "no_lane": "No existe ese carril.", "internal": "Algo falló; vuelva a intentarlo.", "nothing_here": "No hay nada aquí.",
	},
	"pt-BR": {
		"title_signin": "Console do suporte", "signin_lead": "Entre com seu token de API. O console faz o que esse token pode fazer, apenas para os emissores dele.",
		"token": "Token de API", "signin": "Entrar", "signin_failed": "Esse token não é válido.",
		"signin_limited": "Muitas tentativas com falha daqui. Aguarde %d segundos e tente de novo.", "session_ended": "Sua sessão terminou. Entre novamente.",
		"signed_in_as": "Sessão de", "tenants": "emissores", "tenants_all": "todos os emissores", "scopes": "permissões",
		"nav_search": "Buscar", "nav_lanes": "Faixas", "signout": "Sair", "signed_out": "Você saiu.",
		"search_label": "Destinatário, assunto ou ID da mensagem", "search_in": "Procurar em", "in_auto": "Tudo", "in_recipient": "Destinatário",
		"in_subject": "Assunto", "in_message_id": "ID da mensagem", "state": "Estado", "state_any": "Qualquer",
		"state_queued": "na fila", "state_held": "retida", "state_delivered": "entregue", "state_bounced": "devolvida",
		"since": "De (UTC)", "until": "Até (UTC)", "search": "Buscar", "no_results": "Nenhuma mensagem encontrada.",
		"col_received": "Recebida (UTC)", "col_tenant": "Emissor", "col_from": "Remetente", "col_subject": "Assunto", "col_to": "Destinatários",
		"next_page": "Mensagens anteriores", "err_text": "A busca é longa demais ou tem caracteres não aceitos.", "err_state": "Estado desconhecido.",
		"err_time": "Escreva os horários como 2026-11-23T09:30 ou 2026-11-23, em UTC.", "err_range": "O início deve vir antes do fim.",
		"message": "Mensagem", "message_id": "Message-ID", "envelope_from": "Remetente do envelope", "class": "Classe", "size": "Tamanho (bytes)",
		"release": "Liberar", "release_lead": "Liberar marca a mensagem como segura: as cópias retidas são enviadas e os links pendentes são ativados.",
		"reason": "Motivo (fica na auditoria)", "recipients": "Destinatários", "col_address": "Endereço", "col_state": "Estado",
		"col_attempts": "Tentativas", "col_last_reply": "Última resposta", "col_next": "Próxima tentativa (UTC)", "held_in": "Retida na faixa",
		"seed": "caixa de teste", "placement": "Posição", "arrived": "chegou", "moves": "movida", "attempts": "Tentativas de entrega e respostas",
		"no_attempts": "Nenhuma tentativa ainda.", "links": "Links de download", "col_link": "Link", "col_uses": "Usos", "col_expires": "Expira (UTC)",
		"col_refusals": "Cliques recusados", "revoke": "Revogar", "enable": "Reativar", "events": "Auditoria", "col_time": "Hora (UTC)",
		"col_kind": "Evento", "col_actor": "Quem", "col_detail": "Detalhe", "older_events": "Eventos anteriores",
		"done_released": "Liberada: %d cópias retidas foram para a fila de entrega.", "done_revoked": "Links revogados: %d.", "done_enabled": "Links reativados: %d.",
		"done_paused": "Faixa pausada.", "done_resumed": "Faixa retomada.",
		"not_found": "Essa mensagem não existe.", "forbidden": "Seu token não permite fazer isto.", "form_expired": "Este formulário expirou: abra a página de novo.",
		"reason_required": "Informe um motivo: ele fica na auditoria.", "bad_form": "Não foi possível ler o formulário.",
		"lanes": "Faixas de entrega", "col_lane": "Faixa", "col_provider": "Provedor", "col_rate": "Ritmo atual", "col_configured": "Configurado",
		"col_queue": "Pendentes agora", "col_reason": "Motivo", "col_since": "Desde (UTC)", "col_until": "Até (UTC)", "pause": "Pausar", "resume": "Retomar",
		"unlimited": "sem limite", "per_min": "/min", "no_lanes": "Ainda não há faixas.", "lanes_readonly": "Somente leitura: pausar e retomar uma faixa exige um token admin para todos os emissores.",
		"no_lane_control": "Este certgate não tem faixas para mostrar.", "no_lane": "Essa faixa não existe.", "internal": "Algo deu errado; tente de novo.", "nothing_here": "Não há nada aqui.",
	},
	"fr": {
		"title_signin": "Console du support", "signin_lead": "Connectez-vous avec votre jeton d’API. La console fait ce que ce jeton permet, pour ses émetteurs seulement.",
		"token": "Jeton d’API", "signin": "Se connecter", "signin_failed": "Ce jeton n’est pas valide.",
		"signin_limited": "Trop d’échecs de connexion d’ici. Attendez %d secondes, puis réessayez.", "session_ended": "Votre session a pris fin. Reconnectez-vous.",
		"signed_in_as": "Connecté en tant que", "tenants": "émetteurs", "tenants_all": "tous les émetteurs", "scopes": "droits",
		"nav_search": "Rechercher", "nav_lanes": "Voies", "signout": "Se déconnecter", "signed_out": "Vous êtes déconnecté.",
		"search_label": "Destinataire, objet ou identifiant du message", "search_in": "Chercher dans", "in_auto": "Tout", "in_recipient": "Destinataire",
		"in_subject": "Objet", "in_message_id": "Identifiant du message", "state": "État", "state_any": "Tous",
		"state_queued": "en file", "state_held": "retenu", "state_delivered": "remis", "state_bounced": "rejeté",
		"since": "Du (UTC)", "until": "Au (UTC)", "search": "Rechercher", "no_results": "Aucun message trouvé.",
		"col_received": "Reçu (UTC)", "col_tenant": "Émetteur", "col_from": "Expéditeur", "col_subject": "Objet", "col_to": "Destinataires",
		"next_page": "Messages plus anciens", "err_text": "La recherche est trop longue ou contient des caractères non acceptés.", "err_state": "État inconnu.",
		"err_time": "Écrivez les heures ainsi : 2026-11-23T09:30 ou 2026-11-23, en UTC.", "err_range": "Le début doit précéder la fin.",
		"message": "Message", "message_id": "Message-ID", "envelope_from": "Expéditeur de l’enveloppe", "class": "Classe", "size": "Taille (octets)",
		"release": "Libérer", "release_lead": "Libérer marque le message comme sûr : les copies retenues partent et les liens en attente s’activent.",
		"reason": "Motif (conservé dans la piste d’audit)", "recipients": "Destinataires", "col_address": "Adresse", "col_state": "État",
		"col_attempts": "Tentatives", "col_last_reply": "Dernière réponse", "col_next": "Prochaine tentative (UTC)", "held_in": "Retenu sur la voie",
		"seed": "boîte témoin", "placement": "Placement", "arrived": "arrivé", "moves": "déplacé", "attempts": "Tentatives de remise et réponses",
		"no_attempts": "Aucune tentative pour l’instant.", "links": "Liens de téléchargement", "col_link": "Lien", "col_uses": "Utilisations", "col_expires": "Expire (UTC)",
		"col_refusals": "Clics refusés", "revoke": "Révoquer", "enable": "Réactiver", "events": "Piste d’audit", "col_time": "Heure (UTC)",
		"col_kind": "Événement", "col_actor": "Qui", "col_detail": "Détail", "older_events": "Événements plus anciens",
		"done_released": "Libéré : %d copies retenues mises en file de remise.", "done_revoked": "Liens révoqués : %d.", "done_enabled": "Liens réactivés : %d.",
		"done_paused": "Voie mise en pause.", "done_resumed": "Voie reprise.",
		"not_found": "Ce message n’existe pas.", "forbidden": "Votre jeton ne permet pas cette action.", "form_expired": "Ce formulaire a expiré : rouvrez la page.",
		"reason_required": "Donnez un motif : il est conservé dans la piste d’audit.", "bad_form": "Le formulaire n’a pas pu être lu.",
		"lanes": "Voies de remise", "col_lane": "Voie", "col_provider": "Fournisseur", "col_rate": "Débit actuel", "col_configured": "Configuré",
		"col_queue": "À remettre", "col_reason": "Motif", "col_since": "Depuis (UTC)", "col_until": "Jusqu’à (UTC)", "pause": "Mettre en pause", "resume": "Reprendre",
		"unlimited": "illimité", "per_min": "/min", "no_lanes": "Pas encore de voie.", "lanes_readonly": "Lecture seule : mettre en pause ou reprendre une voie demande un jeton admin pour tous les émetteurs.",
		"no_lane_control": "Ce certgate n’a pas de voies à montrer.", "no_lane": "Cette voie n’existe pas.", "internal": "Un problème est survenu ; réessayez.", "nothing_here": "Rien ici.",
	},
}

// languages are the console's, the keys of texts.
var languages = slices.Sorted(maps.Keys(texts))

// pickLanguage is ?lang= when it names one of the console's languages,
// else the browser's choice, else English.
func pickLanguage(r *http.Request) string {
	if l := lang.Match(r.URL.Query().Get("lang"), languages); l != "" {
		return l
	}
	return lang.Pick(r.Header.Get("Accept-Language"), languages, "en")
}
