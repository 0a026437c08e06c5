/**
 * A browser app: wire usersync to supabase-js once, next to where the Supabase client is made.
 * Every sign-in, every page load with a stored session and every user change (a confirmed email,
 * `updateUser({ data })`) then syncs the profile; repeats of the same session do not.
 */
import { createClient } from "@supabase/supabase-js";

import { attachUsersync, UsersyncError } from "../src/index.js";

export const supabase = createClient(
  "https://<project-ref>.supabase.co",
  "sb_publishable_...", // never a secret key in a browser
);

export const detachUsersync = attachUsersync(supabase, {
  url: "https://usersync.example.com", // USERSYNC_CORS_ORIGINS must allow this app's origin
  onSynced: ({ action }, { event }) => {
    if (action === "created") console.info(`profile created on ${event}`);
  },
  onError: (error) => {
    // Already retried where that helps; the service's healing loop repairs the profile later.
    const code = error instanceof UsersyncError ? error.code : "unreachable";
    console.warn(`usersync: profile sync deferred (${code})`);
  },
});

// On teardown (tests, hot reload, a single-page app unmounting its auth provider):
// detachUsersync();
