/**
 * Test support (no tests here): a fake `supabase.auth` that emits the events a test names, and
 * a queue to await callbacks (`onSynced`, `onError`) instead of sleeping.
 */
import type { SupabaseLike, SupabaseSessionLike } from "../src/index.js";

type Callback = (event: string, session: SupabaseSessionLike | null) => void;

export class FakeSupabase implements SupabaseLike {
  private callbacks = new Set<Callback>();
  unsubscribed = 0;

  auth = {
    onAuthStateChange: (callback: Callback) => {
      this.callbacks.add(callback);
      return {
        data: {
          subscription: {
            unsubscribe: () => {
              this.unsubscribed += 1;
              this.callbacks.delete(callback);
            },
          },
        },
      };
    },
  };

  /** Calls every subscriber the way supabase-js does: synchronously, in order. */
  emit(event: string, session: SupabaseSessionLike | null): void {
    for (const callback of [...this.callbacks]) callback(event, session);
  }

  get subscribers(): number {
    return this.callbacks.size;
  }
}

/** Values pushed by callbacks, taken in order by `next()`. */
export class Queue<T> {
  private items: T[] = [];
  private waiting: ((item: T) => void)[] = [];

  push = (item: T): void => {
    const waiter = this.waiting.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  };

  next(): Promise<T> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  get length(): number {
    return this.items.length;
  }
}

/** A JWT-shaped token (unsigned) carrying these claims, for servers that do not verify. */
export function unsignedToken(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.signature`;
}

/** A fetch that counts its calls. */
export function countingFetch(): { fetch: typeof fetch; calls: Request[] } {
  const calls: Request[] = [];
  return {
    calls,
    fetch: (input, init) => {
      calls.push(input instanceof Request ? input : new Request(input, init));
      return fetch(input, init);
    },
  };
}
