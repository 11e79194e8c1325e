// Queries and mutations: POST /graphql on this server, with the bearer token when there is one.

/** The server refused the token (HTTP 401): the page forgets it. */
export class TokenRefused extends Error {}

/** This server's GraphQL endpoint, relative to the page so the board works under a path prefix. */
export const endpoint = new URL("graphql", document.baseURI);

/** The operation's `data`; throws TokenRefused on a 401 and Error on any other failure. */
export async function request(query, variables, token) {
  const headers = { "content-type": "application/json", accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(endpoint, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  } catch {
    throw new Error("The server cannot be reached.");
  }
  const body = await response.json().catch(() => null);
  const message = body?.errors?.map((e) => e.message).join("; ");
  if (response.status === 401) throw new TokenRefused(message || "The token was refused.");
  if (!response.ok || !body) throw new Error(message || `The server answered ${response.status}.`);
  if (body.errors?.length) throw new Error(message);
  return body.data;
}
