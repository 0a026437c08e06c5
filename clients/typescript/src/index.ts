/**
 * A small typed client for usersync.
 *
 * The types come from the committed OpenAPI document (`npm run generate`), so a change to the
 * API that the client does not follow fails to compile here rather than at a user's sign-up.
 */
import createClient from "openapi-fetch";

import { problemOf, UsersyncError } from "./errors.js";
import type { components, paths } from "./schema.js";

export { UsersyncError } from "./errors.js";
export {
  attachUsersync,
  type AttachOptions,
  type SupabaseLike,
  type SupabaseSessionLike,
  type SyncContext,
} from "./attach.js";

export type SyncOutcome = components["schemas"]["SyncOutcome"];
export type Status = components["schemas"]["Status"];
export type UserDrift = components["schemas"]["UserDrift"];
export type Problem = components["schemas"]["Problem"];
export type Run = components["schemas"]["Run"];
export type StartRun = components["schemas"]["StartRun"];
export type UserDetail = components["schemas"]["UserDetail"];
export type UserMatches = components["schemas"]["UserMatches"];
export type EventPage = components["schemas"]["EventPage"];
export type RetryOutcome = components["schemas"]["RetryOutcome"];
export type RepairRequest = components["schemas"]["RepairRequest"];
export type RepairOutcome = components["schemas"]["RepairOutcome"];

export interface UsersyncOptions {
  /** Where usersync listens, e.g. `https://usersync.internal`. */
  baseUrl: string;
  /**
   * A secret key (`sb_secret_...`) for the service-only calls (`status`, `reconcile`). Keep it
   * on the server: never ship it to a browser.
   */
  secretKey?: string;
  /** A custom fetch (tests, edge runtimes). */
  fetch?: typeof fetch;
}

function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.data === undefined) {
    throw new UsersyncError(problemOf(result.error, result.response));
  }
  return result.data;
}

export function createUsersync(options: UsersyncOptions) {
  const client = createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/$/, ""),
    fetch: options.fetch,
  });
  const serviceHeaders = () => {
    if (!options.secretKey) {
      throw new Error("this call needs the `secretKey` option (a service call)");
    }
    return { apikey: options.secretKey };
  };

  return {
    /**
     * Syncs the signed-in user's profile: call it right after `supabase.auth.signUp` (when it
     * returned a session) or in the OAuth callback after `exchangeCodeForSession`.
     */
    async syncMe(accessToken: string): Promise<SyncOutcome> {
      return unwrap(
        await client.POST("/v1/users/me/sync", {
          headers: { Authorization: `Bearer ${accessToken}` },
        }),
      );
    },

    /** One user's drift; a user may ask about themselves only. */
    async drift(accessToken: string, userId: string): Promise<UserDrift> {
      return unwrap(
        await client.GET("/v1/users/{id}/drift", {
          params: { path: { id: userId } },
          headers: { Authorization: `Bearer ${accessToken}` },
        }),
      );
    },

    /** Drift counts per kind, totals, dead letters and the last run (service only). */
    async status(): Promise<Status> {
      return unwrap(await client.GET("/v1/status", { headers: serviceHeaders() }));
    },

    /**
     * One user as usersync knows them (service only): the auth side (safe fields), the
     * profile, drift, a pending dead letter and the latest repairs.
     */
    async user(userId: string): Promise<UserDetail> {
      return unwrap(
        await client.GET("/v1/users/{id}", {
          params: { path: { id: userId } },
          headers: serviceHeaders(),
        }),
      );
    },

    /** The users whose auth user or profile holds `email`, in any case (service only). */
    async findUsers(email: string): Promise<UserMatches> {
      return unwrap(
        await client.GET("/v1/users", {
          params: { query: { email } },
          headers: serviceHeaders(),
        }),
      );
    },

    /** A page of one user's audit trail, newest first; pass `next` as `before` for the next. */
    async userEvents(
      userId: string,
      page: { before?: number; limit?: number } = {},
    ): Promise<EventPage> {
      return unwrap(
        await client.GET("/v1/users/{id}/events", {
          params: { path: { id: userId }, query: page },
          headers: serviceHeaders(),
        }),
      );
    },

    /** Heals a dead letter's user now (service only) and says whether it healed. */
    async retryDeadLetter(userId: string): Promise<RetryOutcome> {
      return unwrap(
        await client.POST("/v1/dead-letters/{user_id}/retry", {
          params: { path: { user_id: userId } },
          headers: serviceHeaders(),
        }),
      );
    },

    /**
     * Repairs one user (service only), as a run of that user alone: `action` defaults to the
     * configured policy's for the user's drift, and `dry_run` says what would be done. A refusal
     * throws a `UsersyncError` with a stable code (`in_sync`, `report_only`,
     * `action_does_not_fit`, `ambiguous_email`, `rekey_refused`, `no_admin_api`).
     */
    async repairUser(userId: string, request: RepairRequest = {}): Promise<RepairOutcome> {
      return unwrap(
        await client.POST("/v1/users/{id}/repair", {
          params: { path: { id: userId } },
          headers: serviceHeaders(),
          body: request,
        }),
      );
    },

    /**
     * Starts a reconciliation run (service only) and, unless `wait` is false, polls it until it
     * stops. A dry run plans and writes nothing. While another run is in progress this throws a
     * `UsersyncError` with code `run_in_progress`.
     */
    async reconcile(options: StartRun, wait = true): Promise<Run> {
      let run = unwrap(
        await client.POST("/v1/reconciliations", { headers: serviceHeaders(), body: options }),
      );
      while (wait && (run.state === "planning" || run.state === "running")) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        run = unwrap(
          await client.GET("/v1/reconciliations/{id}", {
            params: { path: { id: run.id } },
            headers: serviceHeaders(),
          }),
        );
      }
      return run;
    },
  };
}

export type Usersync = ReturnType<typeof createUsersync>;
