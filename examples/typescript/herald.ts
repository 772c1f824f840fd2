// A browser client of Herald's HTTP API: follow a channel with EventSource, publish with fetch.
// No dependencies; compile with `tsc --target es2020 --module es2020 herald.ts`.
//
// A page reaches Herald through the channel's edge (docs/edge.md), with a token the app's backend
// mints for its user (`token`), or through the app's own reverse proxy (docs/app-guide.md);
// `channelURL` is then that URL of the channel, e.g. "https://notify.example.com/v1/channels/orders".

/** A CloudEvent as Herald delivers it. */
export interface HeraldEvent {
  specversion: "1.0";
  /** Where the stream is after this event: resume after it (Last-Event-ID or ?since=). */
  heraldcursor: string;
  /** The event's own id: the same on every stream, to deduplicate by. */
  id: string;
  source: string;
  type: string;
  /** The message key. */
  subject: string;
  time: string;
  datacontenttype?: string;
  data?: unknown;
  data_base64?: string;
  /** Extension attributes (traceparent, ...). */
  [extension: string]: unknown;
}

/** A hole the stream could not fill: older than retention, lost in a failover, or a Live channel. */
export interface Gap {
  reason: "trimmed" | "rollback" | "cursor-ahead" | "no-replay";
  from: string;
  resume: string;
  message: string;
}

export interface FollowOptions {
  /** Follow one key; absent (and no keys): the whole channel, or at an edge all the token grants. */
  key?: string;
  /** Follow several keys and key prefixes (a prefix ends with "/": "team-7/"). */
  keys?: string[];
  /** Start with the last N events of each key (not prefix) before the live ones. */
  history?: number;
  /**
   * At an edge: the user's token, fetched from the app for every connection (so an expired one
   * is replaced on the next). EventSource cannot send headers: it goes as ?token=.
   */
  token?: () => Promise<string>;
  /** Resume after this cursor (a heraldcursor kept from an earlier visit). */
  after?: string;
  onMessage(event: HeraldEvent): void;
  /** Gaps are rare; ignoring one means missing messages without noticing. */
  onGap?(gap: Gap, event: HeraldEvent): void;
  /** Called on every break; the stream comes back on its own. */
  onBreak?(): void;
}

/**
 * Follows a channel until the returned function is called. EventSource reconnects by itself
 * after a break (Herald asks for 2 s) and sends Last-Event-ID, so every message arrives once, in
 * order. If the browser gives up (an answer that is not 200), it starts again from the last
 * cursor after a pause.
 */
export function follow(channelURL: string, opts: FollowOptions): () => void {
  let cursor = opts.after ?? "";
  let source: EventSource | undefined;
  let stopped = false;
  let retry: ReturnType<typeof setTimeout> | undefined;

  const open = async () => {
    const params = new URLSearchParams();
    if (opts.key) params.append("key", opts.key);
    for (const k of opts.keys ?? []) params.append("key", k);
    if (cursor) params.set("since", cursor);
    else if (opts.history) params.set("history", String(opts.history));
    if (opts.token) {
      try {
        params.set("token", await opts.token());
      } catch {
        opts.onBreak?.();
        if (!stopped) retry = setTimeout(open, pause());
        return;
      }
    }
    if (stopped) return;
    const query = params.toString();
    const es = new EventSource(channelURL + "/events" + (query ? "?" + query : ""));
    source = es;
    es.addEventListener("message", (e) => {
      const event = JSON.parse((e as MessageEvent<string>).data) as HeraldEvent;
      cursor = event.heraldcursor;
      opts.onMessage(event);
    });
    es.addEventListener("gap", (e) => {
      const event = JSON.parse((e as MessageEvent<string>).data) as HeraldEvent;
      cursor = event.heraldcursor;
      opts.onGap?.(event.data as Gap, event);
    });
    es.onerror = () => {
      opts.onBreak?.();
      if (opts.token && !stopped) {
        // The browser would reconnect with the token in the URL, which may have expired (the
        // edge ends a stream when its token does): reconnect with a fresh one instead.
        es.close();
        retry = setTimeout(open, pause());
      } else if (es.readyState === EventSource.CLOSED && !stopped) {
        retry = setTimeout(open, pause()); // the browser gave up: start again from the cursor
      }
    };
  };
  open();
  return () => {
    stopped = true;
    clearTimeout(retry);
    source?.close();
  };
}

/** A reconnect's pause: 1 to 3 s, spread so that the clients of a restarted edge do not all come back at once. */
function pause(): number {
  return 1000 + Math.random() * 2000;
}

/** The answer to a publish. */
export interface Published {
  /** The message's cursor on its shard. */
  id: string;
  shard: number;
  /** The CloudEvents id subscribers get. */
  eventId: string;
  duplicate?: boolean;
}

/** An error answer: RFC 9457 problem details. */
export class HeraldError extends Error {
  constructor(readonly status: number, readonly problem: { type?: string; title?: string; detail?: string; retryAfter?: number }) {
    super(`herald: ${status} ${problem.title ?? ""}: ${problem.detail ?? ""}`);
  }
}

export interface PublishOptions {
  /** The CloudEvents type (default dev.herald.message). */
  type?: string;
  /** Reused by every attempt, so a retry never stores the message twice. Default: a new UUID. */
  idempotencyKey?: string;
  /** Attempts before giving up (default 5). */
  attempts?: number;
}

/**
 * Publishes data (sent as JSON) under key. No answer, 429 and 5xx are retried with the same
 * Idempotency-Key, after Retry-After when the answer gives one; other errors throw HeraldError.
 */
export async function publish(channelURL: string, key: string, data: unknown, opts: PublishOptions = {}): Promise<Published> {
  const idempotencyKey = opts.idempotencyKey ?? crypto.randomUUID();
  const attempts = opts.attempts ?? 5;
  let last: unknown;
  for (let attempt = 0; attempt < attempts; attempt++) {
    if (attempt > 0) {
      const after = last instanceof HeraldError && last.problem.retryAfter ? last.problem.retryAfter * 1000 : 100 * 2 ** attempt;
      await new Promise((resolve) => setTimeout(resolve, after));
    }
    const headers: Record<string, string> = { "Content-Type": "application/json", "Idempotency-Key": idempotencyKey };
    if (opts.type) headers["Ce-Type"] = opts.type;
    let response: Response;
    try {
      response = await fetch(channelURL + "/messages?key=" + encodeURIComponent(key), { method: "POST", headers, body: JSON.stringify(data) });
    } catch (e) {
      last = e; // no answer: the message may or may not be stored; the same key makes the retry safe
      continue;
    }
    if (response.status === 202) return (await response.json()) as Published;
    last = new HeraldError(response.status, await response.json().catch(() => ({ detail: response.statusText })));
    if (response.status !== 429 && response.status < 500) throw last;
  }
  throw last;
}
