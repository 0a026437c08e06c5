/**
 * supabase-js wiring in one call: `attachUsersync(supabase, { url })` syncs the signed-in user's
 * profile whenever supabase-js says a session started or the user changed.
 *
 * The rule (per attachment, i.e. per page load or process):
 * - `SIGNED_IN` and `INITIAL_SESSION` sync once per (user, session). supabase-js emits
 *   `SIGNED_IN` again for the same session (tab focus, another tab signing in, a reload's
 *   recovery), so those repeats are skipped. The session is the access token's `session_id`
 *   claim (read without verifying; usersync verifies the token), else the refresh token, else
 *   the access token.
 * - `USER_UPDATED` always syncs: the user just changed (a confirmed email, new metadata), which is
 *   exactly what the profile must follow. If a sync of that session is already under way, one
 *   more runs after it, so the profile ends up read after the change.
 * - `TOKEN_REFRESHED` never syncs (nothing about the user changed); it only hands a pending retry
 *   the fresh access token. `SIGNED_OUT` cancels pending work. Other events are ignored.
 * - A sync that finally fails is not remembered as done: the next `SIGNED_IN` or
 *   `INITIAL_SESSION` of that session tries again.
 *
 * Nothing here throws into the app: failures go to `onError` (default `console.warn`). The
 * profile is also healed server-side (trigger, healing loop), so a lost sync is late, not lost.
 */
import createClient from "openapi-fetch";

import { problemOf, UsersyncError } from "./errors.js";
import type { components, paths } from "./schema.js";

type SyncOutcome = components["schemas"]["SyncOutcome"];

/** The part of a supabase-js `Session` that is read here. */
export interface SupabaseSessionLike {
  access_token: string;
  refresh_token?: string;
  user: { id: string };
}

/**
 * The part of a supabase-js client that is used: `supabase.auth.onAuthStateChange`. Typed by
 * shape so the client does not depend on `@supabase/supabase-js`; a `SupabaseClient` fits.
 */
export interface SupabaseLike {
  auth: {
    onAuthStateChange(callback: (event: string, session: SupabaseSessionLike | null) => void): {
      data: { subscription: { unsubscribe(): void } };
    };
  };
}

/** What a sync was for, passed to `onSynced` and `onError`. */
export interface SyncContext {
  /** The auth event that asked for the sync (`SIGNED_IN`, `INITIAL_SESSION`, `USER_UPDATED`). */
  event: string;
  userId: string;
  /** The session identity the sync was deduplicated by (see the module comment). */
  sessionId: string;
  /** Requests made, 1 when the first one answered. */
  attempts: number;
}

export interface AttachOptions {
  /** Where usersync listens, e.g. `https://usersync.example.com`. */
  url: string;
  /** A custom fetch (tests, edge runtimes). */
  fetch?: typeof fetch;
  /** Most requests per sync, the first included (default 5). */
  maxAttempts?: number;
  /** First backoff delay in ms, doubled per attempt and jittered (default 1000). */
  retryDelayMs?: number;
  /** Longest backoff delay in ms (default 30000). A `Retry-After` is honoured up to 10 minutes. */
  maxRetryDelayMs?: number;
  /** Called after each successful sync. */
  onSynced?: (outcome: SyncOutcome, context: SyncContext) => void;
  /**
   * Called once per sync that finally failed: a `UsersyncError` for an API answer (its
   * `status` and `code`), or the network error. Default: `console.warn`.
   */
  onError?: (error: unknown, context: SyncContext) => void;
}

const SESSION_START = new Set(["SIGNED_IN", "INITIAL_SESSION"]);
const MAX_RETRY_AFTER_MS = 10 * 60 * 1000;

interface Job {
  key: string;
  context: SyncContext;
  token: string;
  /** A `USER_UPDATED` arrived while this job ran: sync once more afterwards. */
  again: boolean;
  cancelled: boolean;
  timer?: ReturnType<typeof setTimeout>;
  controller?: AbortController;
}

/** The access token's `session_id` claim, without verifying the token; undefined if absent. */
function sessionIdOf(accessToken: string): string | undefined {
  try {
    const payload = accessToken.split(".")[1];
    if (!payload) return undefined;
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
    if (claims && typeof claims === "object" && "session_id" in claims) {
      const id = (claims as { session_id: unknown }).session_id;
      if (typeof id === "string" && id) return id;
    }
  } catch {
    // Not a JWT we can read: fall back to the other identities.
  }
  return undefined;
}

function sessionIdentity(session: SupabaseSessionLike): string {
  return sessionIdOf(session.access_token) ?? session.refresh_token ?? session.access_token;
}

/** `Retry-After` in ms (delta-seconds or an HTTP date), or undefined if absent or unreadable. */
function retryAfterMs(header: string | null): number | undefined {
  if (header === null) return undefined;
  const value = header.trim();
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/**
 * Subscribes to `supabase.auth.onAuthStateChange` and syncs the user's profile through
 * usersync's `POST /v1/users/me/sync` once per session (see the module comment for the rule).
 * Retries 503, 429 and network errors with jittered exponential backoff, honouring
 * `Retry-After`; other answers are not retried. Never throws. Returns a function that
 * unsubscribes and cancels pending syncs and retries.
 */
export function attachUsersync(supabase: SupabaseLike, options: AttachOptions): () => void {
  const maxAttempts = Math.max(1, Math.floor(options.maxAttempts ?? 5));
  const baseDelay = Math.max(0, options.retryDelayMs ?? 1000);
  const maxDelay = Math.max(baseDelay, options.maxRetryDelayMs ?? 30_000);
  const onError =
    options.onError ??
    ((error: unknown, context: SyncContext) =>
      console.warn(`usersync: profile sync failed for user ${context.userId}`, error));

  const jobs = new Map<string, Job>();
  const synced = new Set<string>();
  let stopped = false;

  const report = (error: unknown, context: SyncContext) => {
    try {
      onError(error, context);
    } catch {
      // An onError that throws has nowhere left to report to; the app must not see it.
    }
  };

  let client: ReturnType<typeof createClient<paths>>;
  try {
    client = createClient<paths>({ baseUrl: options.url.replace(/\/$/, ""), fetch: options.fetch });
  } catch (error) {
    report(error, { event: "", userId: "", sessionId: "", attempts: 0 });
    return () => {};
  }

  const backoff = (attempts: number) => {
    const ceiling = Math.min(maxDelay, baseDelay * 2 ** (attempts - 1));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  };

  const cancel = (job: Job) => {
    job.cancelled = true;
    clearTimeout(job.timer);
    job.controller?.abort();
    jobs.delete(job.key);
  };

  const finish = (job: Job, outcome: { synced: SyncOutcome } | { error: unknown }) => {
    jobs.delete(job.key);
    if ("synced" in outcome) {
      synced.add(job.key);
      try {
        options.onSynced?.(outcome.synced, { ...job.context });
      } catch (error) {
        report(error, { ...job.context });
      }
    } else {
      report(outcome.error, { ...job.context });
    }
    if (job.again && !stopped) {
      start(job.key, { ...job.context, event: "USER_UPDATED", attempts: 0 }, job.token);
    }
  };

  const run = async (job: Job) => {
    job.timer = undefined;
    job.context.attempts += 1;
    const controller = new AbortController();
    job.controller = controller;
    let error: unknown;
    let delay: number | undefined;
    try {
      const { data, error: body, response } = await client.POST("/v1/users/me/sync", {
        headers: { Authorization: `Bearer ${job.token}` },
        signal: controller.signal,
      });
      if (job.cancelled) return;
      if (data !== undefined) {
        finish(job, { synced: data });
        return;
      }
      error = new UsersyncError(problemOf(body, response));
      if (response.status === 503 || response.status === 429) {
        const after = retryAfterMs(response.headers.get("retry-after"));
        delay =
          after === undefined
            ? backoff(job.context.attempts)
            : after > MAX_RETRY_AFTER_MS
              ? undefined
              : // A little jitter on top, so clients told the same second do not return together.
                after + Math.random() * Math.min(1000, after * 0.1);
      }
    } catch (e) {
      if (job.cancelled) return;
      // fetch rejected: the network, DNS, CORS or an unreadable body. Worth another try.
      error = e;
      delay = backoff(job.context.attempts);
    } finally {
      job.controller = undefined;
    }
    if (delay !== undefined && job.context.attempts < maxAttempts) {
      job.timer = setTimeout(() => void run(job), delay);
    } else {
      finish(job, { error });
    }
  };

  const start = (key: string, context: SyncContext, token: string) => {
    const job: Job = { key, context, token, again: false, cancelled: false };
    jobs.set(key, job);
    // Not inside the auth callback: supabase-js calls its subscribers while holding its auth
    // lock (and awaits async ones), and warns that awaiting other supabase calls from there can
    // deadlock. The callback returns at once and the request starts a timer turn later, so
    // nothing holds the lock up on us, and a supabase call in the app's onSynced (say, reading
    // the profile) just waits its turn for the lock.
    job.timer = setTimeout(() => void run(job), 0);
  };

  const onEvent = (event: string, session: SupabaseSessionLike | null) => {
    if (stopped) return;
    if (event === "SIGNED_OUT") {
      for (const job of [...jobs.values()]) cancel(job);
      return;
    }
    const token = session?.access_token;
    const userId = session?.user?.id;
    if (typeof token !== "string" || !token || typeof userId !== "string" || !userId) return;
    const sessionId = sessionIdentity(session!);
    const key = JSON.stringify([userId, sessionId]);
    const pending = jobs.get(key);
    if (pending) pending.token = token; // a retry should use the newest token
    if (event === "USER_UPDATED") {
      if (pending) pending.again = true;
      else start(key, { event, userId, sessionId, attempts: 0 }, token);
    } else if (SESSION_START.has(event) && !pending && !synced.has(key)) {
      start(key, { event, userId, sessionId, attempts: 0 }, token);
    }
  };

  let subscription: { unsubscribe(): void } | undefined;
  try {
    subscription = supabase.auth.onAuthStateChange((event, session) => {
      try {
        onEvent(event, session);
      } catch (error) {
        report(error, {
          event,
          userId: String(session?.user?.id ?? ""),
          sessionId: "",
          attempts: 0,
        });
      }
    }).data.subscription;
  } catch (error) {
    report(error, { event: "", userId: "", sessionId: "", attempts: 0 });
  }

  return () => {
    if (stopped) return;
    stopped = true;
    for (const job of [...jobs.values()]) cancel(job);
    try {
      subscription?.unsubscribe();
    } catch (error) {
      report(error, { event: "", userId: "", sessionId: "", attempts: 0 });
    }
  };
}
