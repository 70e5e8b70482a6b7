// Typed messages: the outbox that delivers each once, and the typing signal.
//
// A message goes as a text stream on `lk.chat` (LiveKit's topic for user text input), with
// the page's own id for it in `kaiwa.message_id`. The agent captions and stores it as
// `chat-<id>`, the id of the message's row here, so the live caption, the history and this
// page's own copy are one row. The outbox is kept in sessionStorage: a message typed while
// the connection is down, or sent just before a reload, is sent when the page is connected
// again. Sending it twice is harmless (the agent takes an id once); losing it is not, so a
// message that cannot be sent is marked "not sent", with a retry, never dropped.

export const CHAT_TOPIC = "lk.chat";
export const NOTICE_TOPIC = "kaiwa.notice";
const MESSAGE_ID = "kaiwa.message_id";
export const MAX_MESSAGE_CHARS = 2000;
// A send that has not gone through by then is tried again at the next connection.
const SEND_TIMEOUT_MS = 5000;
// A message sent and not captioned by the agent within this is sent again (under the same
// id): it can be lost on the way, as when it reaches an agent that has not yet seen the
// page's new connection after a reload.
const ACK_TIMEOUT_MS = 8000;
// Tries before a message is marked "not sent" for the caller to retry.
const MAX_TRIES = 3;

export function rowId(messageId) {
  return `chat-${messageId}`;
}

// 128 random bits in hex (crypto.randomUUID needs a secure context; this does not).
function newMessageId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error("timed out")), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export class Outbox {
  // `storageKey`: where the outbox is kept for this call; `onChange()` after any change.
  constructor(storageKey, onChange) {
    this.storageKey = storageKey;
    this.onChange = onChange;
    this.messages = JSON.parse(sessionStorage.getItem(storageKey) || "[]");
    // A send cut short by a reload is owed again.
    for (const m of this.messages) if (m.state === "sending") m.state = "queued";
    this.flushing = false;
  }

  save() {
    sessionStorage.setItem(this.storageKey, JSON.stringify(this.messages));
    this.onChange();
  }

  // The message of a row, if this page sent it.
  byRow(id) {
    return this.messages.find((m) => rowId(m.id) === id);
  }

  add(text, speaker, language) {
    const message = { id: newMessageId(), text, speaker, language, state: "queued", tries: 0 };
    this.messages.push(message);
    this.save();
    return message;
  }

  // The agent's caption or the history has the message: it arrived, and is kept there.
  delivered(id) {
    const before = this.messages.length;
    this.messages = this.messages.filter((m) => rowId(m.id) !== id);
    if (this.messages.length !== before) this.save();
  }

  refused(id, notice) {
    const message = this.byRow(id);
    if (!message) return;
    message.state = "refused";
    message.notice = notice;
    this.save();
  }

  // Messages sent and not acknowledged in time go back in the queue (or, out of tries,
  // are marked "not sent"); whether any is owed now.
  overdue(now = Date.now()) {
    let changed = false;
    let owed = false;
    for (const m of this.messages) {
      if (m.state !== "sent" || now - (m.sentAt ?? 0) < ACK_TIMEOUT_MS) continue;
      m.state = m.tries >= MAX_TRIES ? "failed" : "queued";
      changed = true;
      owed ||= m.state === "queued";
    }
    if (changed) this.save();
    return owed;
  }

  retry(id) {
    const message = this.byRow(id);
    if (!message) return;
    message.state = "queued";
    message.tries = 0;
    this.save();
  }

  // Send what is owed, in order, over `room` (connected). Stops at the first failure: the
  // rest wait for the next connection, so messages arrive in the order they were typed.
  async flush(room) {
    if (this.flushing) return;
    this.flushing = true;
    try {
      for (const message of this.messages) {
        if (message.state !== "queued") continue;
        message.state = "sending";
        message.tries += 1;
        this.save();
        try {
          await withTimeout(
            room.localParticipant.sendText(message.text, {
              topic: CHAT_TOPIC,
              attributes: { [MESSAGE_ID]: message.id },
            }),
            SEND_TIMEOUT_MS,
          );
          message.state = "sent";
          message.sentAt = Date.now();
          this.save();
        } catch {
          message.state = message.tries >= MAX_TRIES ? "failed" : "queued";
          this.save();
          return;
        }
      }
    } finally {
      this.flushing = false;
    }
  }
}

// Says whether the message box has text, through `put(typing)`: at most one update in
// MIN_GAP_MS (a change inside it goes out when the gap is over, with the latest state),
// and back to "not typing" after IDLE_MS without a keystroke, or at once on send.
const MIN_GAP_MS = 2000;
const IDLE_MS = 5000;

export class TypingSignal {
  constructor(put) {
    this.put = put;
    this.sent = false; // what others see
    this.wanted = false;
    this.lastPutAt = -Infinity;
    this.pending = null;
    this.idle = null;
  }

  // A keystroke; `hasText`: whether the box has text after it.
  input(hasText) {
    clearTimeout(this.idle);
    if (hasText) this.idle = setTimeout(() => this.want(false), IDLE_MS);
    this.want(hasText);
  }

  sentMessage() {
    clearTimeout(this.idle);
    this.want(false);
  }

  want(typing) {
    this.wanted = typing;
    if (this.pending) return; // goes out with the latest state when the gap is over
    const wait = this.lastPutAt + MIN_GAP_MS - performance.now();
    if (wait > 0) {
      this.pending = setTimeout(() => {
        this.pending = null;
        this.update();
      }, wait);
    } else {
      this.update();
    }
  }

  update() {
    if (this.wanted === this.sent) return;
    const before = this.sent;
    this.sent = this.wanted;
    this.lastPutAt = performance.now();
    this.put(this.sent).catch(() => {
      this.sent = before; // not shown to others: the next keystroke tries again
    });
  }
}
