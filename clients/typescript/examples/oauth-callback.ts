/**
 * An OAuth callback route (the shape of a Next.js App Router `route.ts` GET handler, or any
 * fetch-style server): exchange the code for a session, sync the profile, then redirect.
 *
 * A sync failure must not strand the user on an error page: the profile is also healed by
 * usersync's trigger and healing loop, so log it and go on.
 */
import { createClient } from "@supabase/supabase-js";

import { createUsersync, UsersyncError } from "../src/index.js";

const usersync = createUsersync({ baseUrl: process.env.USERSYNC_URL! });

export async function GET(request: Request): Promise<Response> {
  const url = new URL(request.url);
  const code = url.searchParams.get("code");
  const next = url.searchParams.get("next") ?? "/";
  if (!code) {
    return Response.redirect(new URL("/login?error=missing_code", url.origin), 303);
  }
  const supabase = createClient(process.env.SUPABASE_URL!, process.env.SUPABASE_PUBLISHABLE_KEY!, {
    auth: { flowType: "pkce", persistSession: false },
  });
  const { data, error } = await supabase.auth.exchangeCodeForSession(code);
  if (error || !data.session) {
    return Response.redirect(new URL("/login?error=exchange_failed", url.origin), 303);
  }
  try {
    await usersync.syncMe(data.session.access_token);
  } catch (e) {
    const code = e instanceof UsersyncError ? e.code : "unreachable";
    console.warn(`usersync: profile sync deferred to the healing loop (${code})`);
  }
  return Response.redirect(new URL(next, url.origin), 303);
}
