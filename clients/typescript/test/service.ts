/**
 * Test support (no tests here): starts the real service (`usersync dev`: a throwaway Postgres
 * with the demo users) and mints user tokens with `jose` the way Supabase Auth mints them.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { once } from "node:events";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

import { SignJWT } from "jose";

const binary =
  process.env.USERSYNC_BIN ??
  fileURLToPath(new URL("../../../../target/debug/usersync", import.meta.url));

export const ADA = "00000000-0000-4000-8000-000000000001";
export const GRACE = "00000000-0000-4000-8000-000000000002";
export const LINUS = "00000000-0000-4000-8000-000000000003";
/** The demo's profile with no auth user. */
export const ORPHAN = "00000000-0000-4000-8000-0000000000ff";

export interface Service {
  /** The `export NAME=value` lines of the dev banner (`USERSYNC_URL`, `SECRET_KEY`, ...). */
  banner: Record<string, string>;
  stop(): Promise<void>;
}

export async function startService(): Promise<Service> {
  const service: ChildProcessWithoutNullStreams = spawn(binary, ["dev", "--listen", "127.0.0.1:0"], {
    env: { PATH: process.env.PATH, USERSYNC_LOG_FORMAT: "json" },
  });
  service.stderr.resume();
  const banner: Record<string, string> = {};
  let out = "";
  for await (const chunk of service.stdout) {
    out += chunk;
    if (out.includes("Ctrl-C stops")) break;
  }
  for (const match of out.matchAll(/^export (\w+)=(\S+)/gm)) {
    banner[match[1]] = match[2];
  }
  assert.ok(banner.USERSYNC_URL, `no URL in the banner:\n${out}`);
  return {
    banner,
    async stop() {
      service.kill("SIGTERM");
      await once(service, "exit");
    },
  };
}

/** A user's access token signed with the dev service's JWT secret. */
export async function accessToken(
  secret: string,
  sub: string,
  claims: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT({ role: "authenticated", aal: "aal1", is_anonymous: false, ...claims })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(sub)
    .setAudience("authenticated")
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(new TextEncoder().encode(secret));
}
