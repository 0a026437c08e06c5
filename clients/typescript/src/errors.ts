/** The error the client throws (and `attachUsersync` reports) for an API problem. */
import type { components } from "./schema.js";

type Problem = components["schemas"]["Problem"];

/** An API error, carrying the problem+json body; branch on `code`, not on the message. */
export class UsersyncError extends Error {
  readonly status: number;
  readonly code: string;
  readonly problem: Problem;

  constructor(problem: Problem) {
    super(`${problem.status} ${problem.code}: ${problem.detail}`);
    this.name = "UsersyncError";
    this.status = problem.status;
    this.code = problem.code;
    this.problem = problem;
  }
}

export function problemOf(error: unknown, response: Response): Problem {
  if (error && typeof error === "object" && "code" in error) {
    return error as Problem;
  }
  return {
    type: "about:blank",
    title: response.statusText,
    status: response.status,
    detail: `unexpected ${response.status} response`,
    code: "unexpected_response",
  };
}

