/**
 * `attachUsersync` against the real service (`usersync dev`): a fake `supabase.auth` emits the
 * events supabase-js emits, and a real supabase-js client recovers a stored session.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { createClient } from "@supabase/supabase-js";

import { attachUsersync, type SyncContext, type SyncOutcome } from "../src/index.js";
import { countingFetch, FakeSupabase, Queue } from "./fakes.js";
import { ADA, LINUS, accessToken, startService, type Service } from "./service.js";

let service: Service;
let url: string;
let secret: string;

before(async () => {
  service = await startService();
  url = service.banner.USERSYNC_URL;
  secret = service.banner.USERSYNC_JWT_SECRET;
});

after(async () => {
  await service.stop();
});

async function session(user: string, sessionId: string, refreshToken: string) {
  return {
    access_token: await accessToken(secret, user, { session_id: sessionId }),
    refresh_token: refreshToken,
    user: { id: user },
  };
}

test("SIGNED_IN syncs once per session; repeats and TOKEN_REFRESHED do not; USER_UPDATED does", async () => {
  const supabase = new FakeSupabase();
  const counted = countingFetch();
  const synced = new Queue<[SyncOutcome, SyncContext]>();
  const errors = new Queue<unknown>();
  const detach = attachUsersync(supabase, {
    url,
    fetch: counted.fetch,
    onSynced: (outcome, context) => synced.push([outcome, context]),
    onError: errors.push,
  });

  const first = await session(ADA, "11111111-1111-4111-8111-111111111111", "refresh-1");
  supabase.emit("SIGNED_IN", first);
  const [outcome, context] = await synced.next();
  assert.equal((outcome.user as Record<string, unknown>).email, "ada@example.com");
  assert.deepEqual(context, {
    event: "SIGNED_IN",
    userId: ADA,
    sessionId: "11111111-1111-4111-8111-111111111111",
    attempts: 1,
  });

  // The same session again (tab focus, a reload's recovery), then a refresh of it, then a
  // SIGNED_IN carrying the refreshed tokens: still the same session, nothing to sync.
  supabase.emit("SIGNED_IN", first);
  supabase.emit("INITIAL_SESSION", first);
  const refreshed = await session(ADA, "11111111-1111-4111-8111-111111111111", "refresh-2");
  supabase.emit("TOKEN_REFRESHED", refreshed);
  supabase.emit("SIGNED_IN", refreshed);

  // A new session syncs. Its request is scheduled after anything the repeats could have
  // scheduled, so once it answered, a wrong extra request would already have been counted.
  const second = await session(ADA, "22222222-2222-4222-8222-222222222222", "refresh-3");
  supabase.emit("SIGNED_IN", second);
  const [again, secondContext] = await synced.next();
  assert.equal(again.action, "unchanged");
  assert.equal(secondContext.sessionId, "22222222-2222-4222-8222-222222222222");
  assert.equal(counted.calls.length, 2);

  // The user changed (say, a confirmed email): sync again, same session or not.
  supabase.emit("USER_UPDATED", second);
  const [, updated] = await synced.next();
  assert.equal(updated.event, "USER_UPDATED");
  assert.equal(counted.calls.length, 3);
  assert.equal(counted.calls[2].headers.get("authorization"), `Bearer ${second.access_token}`);

  // Signing out syncs nothing; detaching unsubscribes.
  supabase.emit("SIGNED_OUT", null);
  detach();
  assert.equal(supabase.subscribers, 0);
  assert.equal(synced.length, 0);
  assert.equal(errors.length, 0);
});

test("a real supabase-js client: the recovered session syncs once", async () => {
  // A session in storage, as a browser holds it after sign-in. On start supabase-js recovers
  // it and emits SIGNED_IN and INITIAL_SESSION for it: one sync.
  const stored = {
    ...(await session(LINUS, "33333333-3333-4333-8333-333333333333", "refresh-linus")),
    token_type: "bearer",
    expires_in: 3600,
    expires_at: Math.floor(Date.now() / 1000) + 3600,
    user: { id: LINUS, aud: "authenticated", role: "authenticated", email: "linus@example.com" },
  };
  const storage = new Map([["usersync-test-auth", JSON.stringify(stored)]]);
  const supabase = createClient("http://127.0.0.1:9", "publishable-key", {
    auth: {
      storageKey: "usersync-test-auth",
      storage: {
        getItem: (key) => storage.get(key) ?? null,
        setItem: (key, value) => void storage.set(key, value),
        removeItem: (key) => void storage.delete(key),
      },
      autoRefreshToken: false,
      persistSession: true,
      detectSessionInUrl: false,
    },
    // Realtime is never used here; Node 20 has no WebSocket for it to find on its own.
    realtime: { transport: class {} as never },
  });
  const events: string[] = [];
  supabase.auth.onAuthStateChange((event) => void events.push(event));
  const counted = countingFetch();
  const synced = new Queue<[SyncOutcome, SyncContext]>();
  const errors = new Queue<unknown>();
  // Type check as much as a run: a SupabaseClient is what attachUsersync takes.
  const detach = attachUsersync(supabase, {
    url,
    fetch: counted.fetch,
    onSynced: (outcome, context) => synced.push([outcome, context]),
    onError: errors.push,
  });
  const [outcome, context] = await synced.next();
  assert.equal((outcome.user as Record<string, unknown>).email, "linus@example.com");
  assert.equal(context.userId, LINUS);
  assert.equal(context.sessionId, "33333333-3333-4333-8333-333333333333");

  // Every event of the start-up has been emitted once getSession returns; a sync they asked
  // for would have been sent within the next timer turn.
  const { data } = await supabase.auth.getSession();
  assert.equal(data.session?.user.id, LINUS);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(events, ["SIGNED_IN", "INITIAL_SESSION"]);
  assert.equal(counted.calls.length, 1);
  assert.equal(errors.length, 0);
  detach();
});
