/**
 * Right after sign-up, in the browser or on the server: make sure the profile row exists before
 * the app reads it. With email confirmation on, `signUp` returns no session; the same call then
 * belongs after the first sign-in (or in the confirmation callback).
 */
import { createClient } from "@supabase/supabase-js";

import { createUsersync } from "../src/index.js";

const supabase = createClient(process.env.SUPABASE_URL!, process.env.SUPABASE_PUBLISHABLE_KEY!);
const usersync = createUsersync({ baseUrl: process.env.USERSYNC_URL! });

export async function signUpAndSync(email: string, password: string, fullName: string) {
  const { data, error } = await supabase.auth.signUp({
    email,
    password,
    // Stored in user_metadata: usersync copies full_name into the profile on create. It never
    // takes a role from here (anyone can write user_metadata).
    options: { data: { full_name: fullName } },
  });
  if (error) throw error;
  if (!data.session) {
    return { confirmationPending: true as const };
  }
  // The token only says who; usersync reads the data from auth.users itself.
  const { action, user } = await usersync.syncMe(data.session.access_token);
  return { confirmationPending: false as const, action, user };
}
