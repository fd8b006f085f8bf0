"""Russian texts, the same keys as en.py."""

TEXTS: dict[str, str] = {
    "start": (
        "Здравствуйте! Это бот сообщества SOSenki.\n\n"
        "Чтобы запросить доступ, отправьте /request и несколько слов о себе, например\n"
        "<code>/request Анна, участок 42, переезжаем весной</code>\n\n"
        "Команда /status в любой момент покажет, что с вашим запросом, а /cancel отзовёт "
        "его, пока он ждёт решения."
    ),
    "help": (
        "Отправьте /request и ваше сообщение, чтобы запросить доступ; /status покажет, что "
        "с ним, /cancel отзовёт его."
    ),
    "help_admin": (
        "Вы администратор. /pending покажет запросы, ожидающие решения, /stats — цифры "
        "за последние 7 и 30 дней; нажмите "
        "Approve или Reject или ответьте на запрос словом Approve, Reject или "
        "Reject: причина. Несколько запросов сразу приходят одним сообщением с рядом "
        "кнопок для каждого; ответьте на него Approve 12 или Reject 12: причина."
    ),
    "request_usage": (
        "Пожалуйста, добавьте сообщение после команды, например\n"
        "<code>/request Анна, участок 42, переезжаем весной</code>"
    ),
    "request_too_long": "Сообщение слишком длинное: не более {limit} символов.",
    "request_received": (
        "Ваш запрос #{id} получен и ожидает рассмотрения. "
        "Мы напишем вам здесь, как только администратор примет решение."
    ),
    "already_pending": (
        "У вас уже есть запрос, ожидающий рассмотрения (#{id}, отправлен {submitted}). "
        "Пожалуйста, дождитесь решения; /status покажет его."
    ),
    "already_approved": "Ваш запрос #{id} одобрен: у вас уже есть доступ.",
    "status_none": "Вы ещё не отправляли запрос. Отправьте /request и ваше сообщение.",
    "status_pending": "Ваш запрос #{id} (отправлен {submitted}) ожидает рассмотрения.",
    "status_approved": "Ваш запрос #{id} одобрен {responded}. Добро пожаловать в SOSenki!",
    "status_rejected": "Ваш запрос #{id} отклонён {responded}.",
    "status_rejected_reason": "Ваш запрос #{id} отклонён {responded}. Причина: {reason}",
    "status_rejected_again": "Вы можете отправить новый запрос командой /request.",
    "welcome": (
        "Отличные новости: ваш запрос #{id} одобрен. Добро пожаловать в SOSenki!\n\n"
        "Дальше: администратор свяжется с вами и передаст данные для доступа; "
        "не закрывайте этот чат."
    ),
    "rejected": (
        "К сожалению, ваш запрос #{id} отклонён. "
        "Вы можете отправить новый запрос командой /request."
    ),
    "rejected_reason": (
        "К сожалению, ваш запрос #{id} отклонён.\nПричина: {reason}\n\n"
        "Вы можете отправить новый запрос командой /request."
    ),
    "admin_card": (
        "<b>Запрос на доступ #{id}</b>\n"
        "От: {client_link}\n"
        "Имя пользователя: {username}\n"
        "Telegram id: <code>{client_id}</code>\n"
        "Отправлен: {submitted}\n\n"
        "{text}"
    ),
    "admin_card_reminder": "⏰ <b>Всё ещё ждёт решения</b>\n",
    "admin_outcome_approved": "\n\n✅ <b>Одобрено</b>: {admin}, {responded}",
    "admin_outcome_rejected": "\n\n❌ <b>Отклонено</b>: {admin}, {responded}",
    "admin_outcome_reason": "\nПричина: {reason}",
    "no_username": "—",
    "button_approve": "Approve",
    "button_reject": "Reject",
    "decided_approved": "Запрос #{id} одобрен.",
    "decided_rejected": "Запрос #{id} отклонён.",
    "already_processed": "Запрос #{id} уже обработан: {status}, {admin}, {responded}.",
    "status_word_approved": "одобрен",
    "status_word_rejected": "отклонён",
    "request_not_found": "Запроса #{id} не существует.",
    "reply_unknown_request": (
        "Не понимаю, к какому запросу относится ответ: ответьте на уведомление о запросе."
    ),
    "not_authorized": "У вас нет прав принимать решения по запросам.",
    "reply_hint": (
        "Ответьте на запрос словом Approve, Reject или Reject: &lt;причина&gt;. В сообщении "
        "с несколькими запросами укажите номер: Approve 12, Reject 12: &lt;причина&gt;."
    ),
    "digest_reply_hint": (
        "В этом сообщении несколько запросов: укажите номер, например "
        "<code>Approve {id}</code>, <code>Reject {id}</code> или "
        "<code>Reject {id}: причина</code>."
    ),
    "reply_wrong_request": (
        "Запроса #{id} нет в сообщении, на которое вы ответили; в нём запросы {ids}."
    ),
    "digest_header": "📥 <b>Новых запросов: {count}</b>",
    "digest_header_reminder": "⏰ <b>Всё ещё ждут решения: {count}</b>",
    "digest_header_progress": "📥 <b>Запросов: {count}</b> · ждут решения: {waiting}",
    "digest_block": "<b>#{id}</b> · {client_link} · {username} · {submitted}",
    "digest_outcome_approved": "✅ <b>Одобрено</b>: {admin}, {responded}",
    "digest_outcome_rejected": "❌ <b>Отклонено</b>: {admin}, {responded}",
    "digest_button_approve": "✅ #{id}",
    "digest_button_reject": "❌ #{id}",
    "pending_none": "Нет запросов, ожидающих решения.",
    "pending_header": "Запросов, ожидающих решения: {count}; сначала самые старые:",
    "pending_more": "…и ещё {count}. Решите эти и снова отправьте /pending.",
    "unknown_button": "Эта кнопка больше не действует.",
    "group_pointer": (
        'Я отвечаю только в личном чате: <a href="{link}">откройте чат со мной</a>, чтобы '
        "запросить доступ или узнать о своём запросе."
    ),
    "group_button": "Это работает только в личном чате с ботом.",
    # cancel and expiry (issue 13)
    "cancel_none": "У вас нет запроса, ожидающего рассмотрения, который можно отозвать.",
    "cancelled": ("Ваш запрос #{id} отозван. Вы можете отправить новый запрос командой /request."),
    "expired": (
        "Срок вашего запроса #{id} истёк: решение не было принято за {days} дн. "
        "Вы можете отправить новый запрос командой /request."
    ),
    "status_cancelled": "Вы отозвали свой запрос #{id} {responded}.",
    "status_expired": "Срок вашего запроса #{id} истёк {responded}, решение не было принято.",
    "admin_outcome_cancelled": "\n\n↩️ <b>Отозван клиентом</b>: {responded}",
    "admin_outcome_expired": "\n\n⌛ <b>Срок истёк</b>: {responded}",
    "digest_outcome_cancelled": "↩️ <b>Отозван клиентом</b>: {responded}",
    "digest_outcome_expired": "⌛ <b>Срок истёк</b>: {responded}",
    "status_word_cancelled": "отозван клиентом",
    "status_word_expired": "срок истёк",
    "already_ended": "Запрос #{id} больше не ждёт решения: {status}, {responded}.",
    "help_cancel": "Команда /cancel отзовёт запрос, ожидающий рассмотрения.",
    # /stats (issue 13)
    "stats_period": (
        "<b>Последние {days} дн.</b>\n"
        "Запросов: {total} · ждут {pending} · одобрено {approved} · отклонено {rejected} · "
        "отозвано {cancelled} · истекло {expired}\n"
        "Время до решения: медиана {median}, 90% — не дольше {p90}"
    ),
    "stats_admin": "{admin}: одобрено {approved}, отклонено {rejected}",
    "stats_no_decisions": "Решений не было.",
    "welcome_link": (
        "Отличные новости: ваш запрос #{id} одобрен. Добро пожаловать в SOSenki!\n\n"
        "Вступайте в чат сообщества по этой ссылке: {link}\n"
        "Она только для вас, срабатывает один раз и действует до {expires}. "
        "Команда /status покажет её снова или, если срок истёк, даст новую."
    ),
    "status_link": (
        "Ваша ссылка в чат сообщества: {link} (срабатывает один раз, действует до {expires})."
    ),
    "status_link_coming": "Новая ссылка в чат сообщества уже в пути.",
    "status_link_failed": (
        "Новую ссылку в чат сообщества сейчас создать не удалось; администраторы уже знают об этом."
    ),
    "community_refused": (
        "⚠️ Я не могу создавать ссылки-приглашения в чат сообщества {chat}: {reason}\n\n"
        "Сделайте меня администратором этого чата с правом приглашать пользователей. До тех "
        "пор одобренные клиенты получают приветствие без ссылки; команда /status даст им "
        "ссылку, когда это заработает. Я сообщаю об этом один раз, пока ссылка снова не "
        "будет создана."
    ),
    "join_request_text": "попросил(а) вступить по ссылке {name}",
    "welcome_joined": (
        "Отличные новости: ваш запрос #{id} одобрен. Добро пожаловать в SOSenki! "
        "Теперь вы участник чата сообщества."
    ),
    "admin_join_not_told": (
        "\nСообщить человеку не удалось: Telegram разрешает боту писать тому, кто попросил "
        "вступить, только в течение 5 минут. На саму заявку на вступление ответ дан."
    ),
    "digest_join_not_told": " · сообщить человеку не удалось (прошло больше 5 минут после заявки)",
    "client_unreachable": "⚠️ <b>Клиент недоступен (заблокировал бота)</b>",
    "status_member": "Вы уже участник чата сообщества.",
}
