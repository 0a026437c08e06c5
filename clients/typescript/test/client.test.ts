/**
 * Starts the real service (`usersync dev`: a throwaway Postgres with demo users) and drives it
 * through the client, with tokens minted by `jose` the way Supabase Auth mints them.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { createUsersync, UsersyncError } from "../src/index.js";
import {
  ADA,
  GRACE,
  ORPHAN,
  accessToken as mint,
  startService,
  type Service,
} from "./service.js";

let service: Service;
let banner: Record<string, string> = {};

before(async () => {
  service = await startService();
  banner = service.banner;
});

after(async () => {
  await service.stop();
});

const accessToken = (sub: string, claims: Record<string, unknown> = {}) =>
  mint(banner.USERSYNC_JWT_SECRET, sub, claims);

test("syncMe creates the profile once, then leaves it unchanged", async () => {
  const usersync = createUsersync({ baseUrl: banner.USERSYNC_URL });
  const token = await accessToken(GRACE);
  const first = await usersync.syncMe(token);
  assert.equal(first.action, "created");
  assert.equal((first.user as Record<string, unknown>).email, "grace@example.com");
  const second = await usersync.syncMe(token);
  assert.equal(second.action, "unchanged");
  const drift = await usersync.drift(token, GRACE);
  assert.deepEqual(drift, { in_sync: true, drift: [] });
});

test("errors arrive as UsersyncError with the problem's code", async () => {
  const usersync = createUsersync({ baseUrl: banner.USERSYNC_URL });
  await assert.rejects(usersync.syncMe("not-a-token"), (e: unknown) => {
    assert.ok(e instanceof UsersyncError);
    assert.equal(e.status, 401);
    assert.equal(e.code, "invalid_token");
    return true;
  });
  const ada = await accessToken(ADA);
  await assert.rejects(usersync.drift(ada, GRACE), (e: unknown) => {
    assert.ok(e instanceof UsersyncError);
    assert.equal(e.code, "not_self");
    return true;
  });
});

test("status needs the secret key and reports the demo drift", async () => {
  const anonymous = createUsersync({ baseUrl: banner.USERSYNC_URL });
  await assert.rejects(anonymous.status(), /secretKey/);
  const admin = createUsersync({ baseUrl: banner.USERSYNC_URL, secretKey: banner.SECRET_KEY });
  const status = await admin.status();
  assert.equal(status.source_total, 5);
  assert.equal(status.drift.orphaned, 1);
  assert.ok(status.drift.missing >= 3);
});

test("reconcile plans with a dry run, then repairs the missing users", async () => {
  const admin = createUsersync({ baseUrl: banner.USERSYNC_URL, secretKey: banner.SECRET_KEY });
  const before = await admin.status();
  const plan = await admin.reconcile({ dry_run: true, kinds: ["missing"] });
  assert.equal(plan.state, "succeeded");
  assert.equal(plan.plan?.kinds.missing?.count, before.drift.missing);
  assert.equal((await admin.status()).target_total, before.target_total);
  const applied = await admin.reconcile({ dry_run: false, kinds: ["missing"] });
  assert.equal(applied.state, "succeeded");
  const after = await admin.status();
  assert.equal(after.drift.missing, 0);
  assert.equal(after.target_total, before.target_total + before.drift.missing);
});

test("an admin finds a user by email, sees both sides and the audit trail", async () => {
  const admin = createUsersync({ baseUrl: banner.USERSYNC_URL, secretKey: banner.SECRET_KEY });
  const matches = await admin.findUsers("ADA@example.com");
  assert.deepEqual(
    matches.users.map((u) => u.id),
    [ADA],
  );
  const ada = await admin.user(ADA);
  assert.equal(ada.auth?.email, "ada@example.com");
  assert.ok(!("encrypted_password" in (ada.auth ?? {})));
  const events = await admin.userEvents(ADA, { limit: 5 });
  assert.ok(Array.isArray(events.events));
  await assert.rejects(admin.retryDeadLetter(ADA), (e: unknown) => {
    assert.ok(e instanceof UsersyncError);
    assert.equal(e.code, "no_dead_letter");
    return true;
  });
  const user = createUsersync({ baseUrl: banner.USERSYNC_URL });
  await assert.rejects(user.user(ADA), /secretKey/);
});

test("an admin repairs one user, dry run first; a refusal has a stable code", async () => {
  const admin = createUsersync({ baseUrl: banner.USERSYNC_URL, secretKey: banner.SECRET_KEY });
  // The demo's orphaned profile: the default policy only reports it.
  await assert.rejects(admin.repairUser(ORPHAN), (e: unknown) => {
    assert.ok(e instanceof UsersyncError);
    assert.equal(e.code, "report_only");
    return true;
  });
  const dry = await admin.repairUser(ORPHAN, { action: "delete", dry_run: true });
  assert.equal(dry.kind, "orphaned");
  assert.equal(dry.repaired, false);
  assert.equal(dry.run.options.user_id, ORPHAN);
  await assert.rejects(admin.repairUser(ORPHAN, { action: "create" }), (e: unknown) => {
    assert.ok(e instanceof UsersyncError);
    assert.equal(e.code, "action_does_not_fit");
    return true;
  });
});
