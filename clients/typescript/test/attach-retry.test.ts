/**
 * `attachUsersync`'s retries and failures against a small local server that answers what each
 * test scripts: 503 and 429 with `Retry-After`, a dropped connection, a 400, no answer at all.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { once } from "node:events";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";

import { attachUsersync, UsersyncError, type SyncContext, type SyncOutcome } from "../src/index.js";
import { FakeSupabase, Queue, unsignedToken } from "./fakes.js";

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

const USER = "00000000-0000-4000-8000-00000000000a";
const OUTCOME = { action: "unchanged", user: { id: USER } };

let server: ReturnType<typeof createServer>;
let url: string;
/** Each request takes the next handler; every arrival is recorded with its time. */
let handlers: Handler[] = [];
let arrivals: { at: number; authorization?: string }[] = [];
let arrived = new Queue<IncomingMessage>();

before(async () => {
  server = createServer((request, response) => {
    arrivals.push({ at: performance.now(), authorization: request.headers.authorization });
    arrived.push(request);
    const handler = handlers.shift() ?? ((_, res) => answer(res, 500, { code: "unscripted" }));
    handler(request, response);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

function script(...next: Handler[]) {
  handlers = next;
  arrivals = [];
  arrived = new Queue();
}

function answer(response: ServerResponse, status: number, body: unknown, headers = {}) {
  const type = status === 200 ? "application/json" : "application/problem+json";
  response.writeHead(status, { "content-type": type, ...headers });
  response.end(JSON.stringify(body));
}

const ok: Handler = (_, res) => answer(res, 200, OUTCOME);
const problem = (status: number, code: string, headers = {}): Handler => (_, res) =>
  answer(res, status, { type: "about:blank", title: code, status, detail: code, code }, headers);

function session(sessionId: string | undefined, refreshToken = "refresh") {
  const claims = sessionId ? { sub: USER, session_id: sessionId } : { sub: USER };
  return { access_token: unsignedToken(claims), refresh_token: refreshToken, user: { id: USER } };
}

function attach(options: { maxAttempts?: number } = {}) {
  const supabase = new FakeSupabase();
  const synced = new Queue<[SyncOutcome, SyncContext]>();
  const errors = new Queue<[unknown, SyncContext]>();
  const detach = attachUsersync(supabase, {
    url,
    retryDelayMs: 5, // backoff alone would come back within milliseconds
    onSynced: (outcome, context) => synced.push([outcome, context]),
    onError: (error, context) => errors.push([error, context]),
    ...options,
  });
  return { supabase, synced, errors, detach };
}

test("a 503 is retried after its Retry-After seconds", async () => {
  script(problem(503, "overloaded", { "retry-after": "1" }), ok);
  const { supabase, synced, errors, detach } = attach();
  supabase.emit("SIGNED_IN", session("s-503"));
  const [outcome, context] = await synced.next();
  assert.deepEqual(outcome, OUTCOME);
  assert.equal(context.attempts, 2);
  assert.ok(arrivals[1].at - arrivals[0].at >= 990, `retried after ${arrivals[1].at - arrivals[0].at} ms`);
  assert.equal(errors.length, 0);
  detach();
});

test("a 429 is retried after its Retry-After seconds", async () => {
  script(problem(429, "rate_limited", { "retry-after": "1" }), ok);
  const { supabase, synced, detach } = attach();
  supabase.emit("INITIAL_SESSION", session("s-429"));
  const [, context] = await synced.next();
  assert.equal(context.attempts, 2);
  assert.ok(arrivals[1].at - arrivals[0].at >= 990, `retried after ${arrivals[1].at - arrivals[0].at} ms`);
  detach();
});

test("a dropped connection and a 503 without Retry-After are retried with backoff", async () => {
  script((req) => req.socket.destroy(), problem(503, "database_unavailable"), ok);
  const { supabase, synced, errors, detach } = attach();
  supabase.emit("SIGNED_IN", session("s-network"));
  const [, context] = await synced.next();
  assert.equal(context.attempts, 3);
  assert.equal(errors.length, 0);
  detach();
});

test("a 400 is reported once through onError, not retried, and not thrown", async () => {
  script(problem(400, "bad_request"));
  const { supabase, synced, errors, detach } = attach();
  assert.doesNotThrow(() => supabase.emit("SIGNED_IN", session("s-400")));
  const [error, context] = await errors.next();
  assert.ok(error instanceof UsersyncError);
  assert.equal(error.status, 400);
  assert.equal(error.code, "bad_request");
  assert.equal(context.attempts, 1);
  assert.equal(arrivals.length, 1);
  assert.equal(synced.length, 0);

  // A failed sync is not remembered as done: the session's next SIGNED_IN tries again.
  script(ok);
  supabase.emit("SIGNED_IN", session("s-400"));
  const [, retried] = await synced.next();
  assert.equal(retried.attempts, 1);
  detach();
});

test("retries stop at maxAttempts and the last answer is reported", async () => {
  const busy = problem(503, "overloaded", { "retry-after": "0" });
  script(busy, busy, busy);
  const { supabase, synced, errors, detach } = attach({ maxAttempts: 3 });
  supabase.emit("SIGNED_IN", session("s-bounded"));
  const [error, context] = await errors.next();
  assert.ok(error instanceof UsersyncError);
  assert.equal(error.status, 503);
  assert.equal(context.attempts, 3);
  assert.equal(arrivals.length, 3);
  assert.equal(synced.length, 0);
  detach();
});

test("without onError a failure goes to console.warn, and nothing throws", async (t) => {
  script(problem(401, "invalid_token"));
  const warned = new Queue<unknown[]>();
  t.mock.method(console, "warn", (...args: unknown[]) => warned.push(args));
  const supabase = new FakeSupabase();
  const detach = attachUsersync(supabase, { url });
  supabase.emit("SIGNED_IN", session("s-warn"));
  const [message, error] = await warned.next();
  assert.match(String(message), /usersync/);
  assert.ok(error instanceof UsersyncError && error.code === "invalid_token");
  detach();
});

test("an onSynced that throws is reported through onError, not thrown", async () => {
  script(ok);
  const supabase = new FakeSupabase();
  const errors = new Queue<unknown>();
  const detach = attachUsersync(supabase, {
    url,
    onSynced: () => {
      throw new Error("app bug");
    },
    onError: errors.push,
  });
  supabase.emit("SIGNED_IN", session("s-throws"));
  assert.match(String(await errors.next()), /app bug/);
  detach();
});

test("without a session_id the refresh token tells sessions apart", async () => {
  script(ok, ok);
  const { supabase, synced, detach } = attach();
  supabase.emit("SIGNED_IN", session(undefined, "refresh-a"));
  supabase.emit("SIGNED_IN", session(undefined, "refresh-a"));
  supabase.emit("SIGNED_IN", session(undefined, "refresh-b"));
  assert.equal((await synced.next())[1].sessionId, "refresh-a");
  assert.equal((await synced.next())[1].sessionId, "refresh-b");
  assert.equal(arrivals.length, 2);
  detach();
});

test("USER_UPDATED during a sync runs one more sync after it, with the newest token", async () => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  script((_, res) => void held.then(() => ok(_, res)), ok);
  const { supabase, synced, detach } = attach();
  supabase.emit("SIGNED_IN", session("s-updated", "refresh-1"));
  await arrived.next();
  const changed = session("s-updated", "refresh-2");
  supabase.emit("USER_UPDATED", changed);
  supabase.emit("SIGNED_IN", changed); // same session: no third sync
  release();
  assert.equal((await synced.next())[1].event, "SIGNED_IN");
  const [, context] = await synced.next();
  assert.equal(context.event, "USER_UPDATED");
  assert.equal(arrivals.length, 2);
  assert.equal(arrivals[1].authorization, `Bearer ${changed.access_token}`);
  detach();
});

test("unsubscribing aborts a request in flight and reports nothing", async () => {
  script(() => {}); // never answers
  const { supabase, synced, errors, detach } = attach();
  supabase.emit("SIGNED_IN", session("s-abort"));
  const request = await arrived.next();
  const closed = once(request.socket, "close");
  detach();
  await closed;
  assert.equal(supabase.unsubscribed, 1);
  assert.equal(supabase.subscribers, 0);
  detach(); // a second call does nothing
  assert.equal(supabase.unsubscribed, 1);
  assert.equal(synced.length + errors.length, 0);
});

test("unsubscribing cancels a pending retry", async () => {
  let answered!: () => void;
  const firstAnswered = new Promise<void>((resolve) => (answered = resolve));
  script((req, res) => {
    res.on("finish", answered);
    problem(503, "overloaded", { "retry-after": "1" })(req, res);
  }, ok);
  const { supabase, synced, errors, detach } = attach();
  supabase.emit("SIGNED_IN", session("s-cancel"));
  await arrived.next();
  await firstAnswered;
  detach();
  // The retry was due one second after the answer; give it half a second more to show up.
  const retried = await Promise.race([
    arrived.next().then(() => true),
    new Promise<false>((resolve) => setTimeout(resolve, 1500, false)),
  ]);
  assert.equal(retried, false);
  assert.equal(arrivals.length, 1);
  assert.equal(synced.length + errors.length, 0);
});
