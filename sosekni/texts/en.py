"""English texts. Values in {braces} are filled in; HTML is escaped by the caller."""

TEXTS: dict[str, str] = {
    "start": (
        "Hello! This is the SOSenki community bot.\n\n"
        "To ask for access, send /request followed by a few words about yourself, e.g.\n"
        "<code>/request Anna, plot 42, moving in this spring</code>\n\n"
        "Send /status at any time to see what became of your request, "
        "or /cancel to withdraw it while it waits."
    ),
    "help": (
        "Send /request followed by your message to ask for access, /status to check it, "
        "or /cancel to withdraw it."
    ),
    "help_admin": (
        "You are an administrator. /pending lists the requests waiting for a decision, "
        "/stats shows the numbers of the last 7 and 30 days; "
        "tap Approve or Reject, or reply to a request with Approve, Reject or "
        "Reject: reason. Several requests at once come as one message with a row of "
        "buttons each; reply to it with Approve 12 or Reject 12: reason."
    ),
    "request_usage": (
        "Please add your message after the command, e.g.\n"
        "<code>/request Anna, plot 42, moving in this spring</code>"
    ),
    "request_too_long": "Your message is too long: at most {limit} characters, please.",
    "request_received": (
        "Your request #{id} has been received and is pending review. "
        "You will get a message here as soon as an administrator decides."
    ),
    "already_pending": (
        "You already have a pending request (#{id}, sent {submitted}). "
        "Please wait for the administrators' decision; /status shows it."
    ),
    "already_approved": "Your request #{id} was approved: you already have access.",
    "status_none": "You have not sent a request yet. Send /request followed by your message.",
    "status_pending": "Your request #{id} (sent {submitted}) is pending review.",
    "status_approved": "Your request #{id} was approved on {responded}. Welcome to SOSenki!",
    "status_rejected": "Your request #{id} was rejected on {responded}.",
    "status_rejected_reason": "Your request #{id} was rejected on {responded}. Reason: {reason}",
    "status_rejected_again": "You may send a new request with /request.",
    "welcome": (
        "Good news: your request #{id} has been approved. Welcome to SOSenki!\n\n"
        "Next steps: an administrator will contact you with the access details; "
        "keep this chat open."
    ),
    "rejected": (
        "Sorry, your request #{id} has been rejected. You may send a new request with /request."
    ),
    "rejected_reason": (
        "Sorry, your request #{id} has been rejected.\nReason: {reason}\n\n"
        "You may send a new request with /request."
    ),
    "admin_card": (
        "<b>Access request #{id}</b>\n"
        "From: {client_link}\n"
        "Username: {username}\n"
        "Telegram id: <code>{client_id}</code>\n"
        "Submitted: {submitted}\n\n"
        "{text}"
    ),
    "admin_card_reminder": "⏰ <b>Still waiting for a decision</b>\n",
    "admin_outcome_approved": "\n\n✅ <b>Approved</b> by {admin} at {responded}",
    "admin_outcome_rejected": "\n\n❌ <b>Rejected</b> by {admin} at {responded}",
    "admin_outcome_reason": "\nReason: {reason}",
    "no_username": "—",
    "button_approve": "Approve",
    "button_reject": "Reject",
    "decided_approved": "Request #{id} approved.",
    "decided_rejected": "Request #{id} rejected.",
    "already_processed": "Request #{id} already processed: {status} by {admin} at {responded}.",
    "status_word_approved": "approved",
    "status_word_rejected": "rejected",
    "request_not_found": "Request #{id} does not exist.",
    "reply_unknown_request": (
        "I cannot tell which request this reply is about: reply to a request notification."
    ),
    "not_authorized": "You are not authorized to decide on requests.",
    "reply_hint": (
        "Reply to a request with Approve, Reject, or Reject: &lt;reason&gt;. On a message "
        "listing several requests, name the request: Approve 12, Reject 12: &lt;reason&gt;."
    ),
    "digest_reply_hint": (
        "This message lists several requests: say which one, e.g. "
        "<code>Approve {id}</code>, <code>Reject {id}</code> or "
        "<code>Reject {id}: reason</code>."
    ),
    "reply_wrong_request": (
        "Request #{id} is not in the message you replied to; its requests are {ids}."
    ),
    "digest_header": "📥 <b>{count} new requests</b>",
    "digest_header_reminder": "⏰ <b>{count} requests still waiting for a decision</b>",
    "digest_header_progress": "📥 <b>{count} requests</b> · {waiting} waiting",
    "digest_block": "<b>#{id}</b> · {client_link} · {username} · {submitted}",
    "digest_outcome_approved": "✅ <b>Approved</b> by {admin} at {responded}",
    "digest_outcome_rejected": "❌ <b>Rejected</b> by {admin} at {responded}",
    "digest_button_approve": "✅ #{id}",
    "digest_button_reject": "❌ #{id}",
    "pending_none": "No requests are waiting for a decision.",
    "pending_header": "{count} request(s) waiting for a decision, oldest first:",
    "pending_more": "…and {count} more. Decide these first, then send /pending again.",
    "unknown_button": "This button is no longer valid.",
    "group_pointer": (
        'I answer in a private chat only: <a href="{link}">open a chat with me</a> to ask '
        "for access or to see your request."
    ),
    "group_button": "This works in a private chat with the bot only.",
    # cancel and expiry (issue 13)
    "cancel_none": "You have no pending request to withdraw.",
    "cancelled": (
        "Your request #{id} has been withdrawn. You may send a new request with /request."
    ),
    "expired": (
        "Your request #{id} expired: no decision was made in {days} day(s). "
        "You may send a new request with /request."
    ),
    "status_cancelled": "You withdrew your request #{id} on {responded}.",
    "status_expired": "Your request #{id} expired on {responded} without a decision.",
    "admin_outcome_cancelled": "\n\n↩️ <b>Withdrawn by the client</b> at {responded}",
    "admin_outcome_expired": "\n\n⌛ <b>Expired</b> at {responded}",
    "digest_outcome_cancelled": "↩️ <b>Withdrawn by the client</b> at {responded}",
    "digest_outcome_expired": "⌛ <b>Expired</b> at {responded}",
    "status_word_cancelled": "withdrawn by the client",
    "status_word_expired": "expired",
    "already_ended": "Request #{id} is no longer pending: {status} at {responded}.",
    "help_cancel": "Send /cancel to withdraw a pending request.",
    # /stats (issue 13)
    "stats_period": (
        "<b>Last {days} days</b>\n"
        "Requests: {total} · pending {pending} · approved {approved} · rejected {rejected} · "
        "withdrawn {cancelled} · expired {expired}\n"
        "Time to decision: median {median}, 90% within {p90}"
    ),
    "stats_admin": "{admin}: {approved} approved, {rejected} rejected",
    "stats_no_decisions": "No decisions.",
    "welcome_link": (
        "Good news: your request #{id} has been approved. Welcome to SOSenki!\n\n"
        "Join the community chat with this link: {link}\n"
        "It is yours alone, works once and is valid until {expires}. "
        "/status shows it again, or gives you a new one once it has expired."
    ),
    "status_link": "Your link to the community chat: {link} (works once, valid until {expires}).",
    "status_link_coming": "A new link to the community chat is on its way.",
    "status_link_failed": (
        "A new link to the community chat could not be made just now; "
        "the administrators have been told."
    ),
    "community_refused": (
        "⚠️ I cannot create invite links for the community chat {chat}: {reason}\n\n"
        "Make me an administrator of that chat with the right to invite users. Until then "
        "approved clients get their welcome without a link; /status gives them one once it "
        "works. I say this once until a link has been created again."
    ),
    "join_request_text": "asked to join through {name}",
    "welcome_joined": (
        "Good news: your request #{id} has been approved. Welcome to SOSenki! "
        "You are now a member of the community chat."
    ),
    "admin_join_not_told": (
        "\nThe person could not be told: Telegram lets the bot write to someone who asked "
        "to join for 5 minutes only. The join request itself was answered."
    ),
    "digest_join_not_told": " · the person could not be told (over 5 minutes after asking to join)",
    "client_unreachable": "⚠️ <b>Client unreachable (blocked the bot)</b>",
    "status_member": "You are already a member of the community chat.",
}
