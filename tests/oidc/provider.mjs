// A real OpenID Connect provider for passgate's integration tests: panva's
// oidc-provider (OpenID-certified), started by the Rust harness
// (tests/it/support/oidc.rs) on a free loopback port.
//
// Usage: node provider.mjs '<json>' where json is
//   { "client_id": "...", "client_secret": "...", "redirect_uris": ["..."],
//     "accounts": { "alice": { "groups": ["devs"] }, ... } }
// It prints one line `listening http://127.0.0.1:PORT` once it serves.
//
// Login and consent are oidc-provider's devInteractions: real HTML forms a
// browser (or the HTTP-level tests) fills in; the login form takes an account
// name from `accounts` (any password). PKCE S256 is required.
//
// Harness endpoints, for the negative tests (never part of a real provider):
//   POST /harness/tamper?mode=M  the NEXT token response's id_token is
//                                replaced by a forged one (modes in FORGE);
//   POST /harness/rotate         the JWKS gains a second key and from now on
//                                ID tokens are signed with it (key rotation);
//   POST /harness/code-ttl?seconds=N  authorization codes issued from now on
//                                live N seconds (default 60): an expired code;
//   POST /harness/redirect-uri?uri=U  registers one more exact redirect URI
//                                for the client (a gateway started after the
//                                provider on a port chosen by the kernel).
import http from 'node:http';
import { generateKeyPair, exportJWK, SignJWT, decodeJwt } from 'jose';
import Provider from 'oidc-provider';

const opts = JSON.parse(process.argv[2] ?? '{}');
const accounts = opts.accounts ?? { alice: { groups: ['devs'] } };

async function rsaKey(kid) {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  const priv = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  const pub = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  return { kid, privateKey, priv, pub };
}

const main = await rsaKey('main');
const rotated = await rsaKey('rotated');
const foreign = await rsaKey('foreign');
let rotatedIn = false;
const extraRedirects = new Set();
let tamper = null;
// Seconds an authorization code lives; the harness can shorten it.
let codeTtl = 60;

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: opts.client_id ?? 'passgate',
    client_secret: opts.client_secret ?? 'passgate-test-secret',
    redirect_uris: opts.redirect_uris ?? [],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [main.priv] },
  async findAccount(_ctx, id) {
    const acct = accounts[id];
    if (!acct) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: acct.preferred_username ?? id,
          name: acct.name ?? id,
          groups: acct.groups ?? [],
        };
      },
    };
  },
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
  scopes: ['openid', 'profile', 'groups'],
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['passgate-test-provider-cookie-key'] },
  ttl: { AuthorizationCode: () => codeTtl, IdToken: 300, AccessToken: 300, Session: 3600, Grant: 3600, Interaction: 600 },
});
// Plain HTTP on loopback: no proxy in front.
provider.proxy = false;
// Exact-match redirect URIs, plus those the harness registered.
const allowed = provider.Client.prototype.redirectUriAllowed;
provider.Client.prototype.redirectUriAllowed = function redirectUriAllowed(uri) {
  return extraRedirects.has(uri) || allowed.call(this, uri);
};

// Each forgery turns the genuine ID token's claims into a token the relying
// party must refuse.
const FORGE = {
  nonce: (c) => sign({ ...c, nonce: 'not-the-nonce' }),
  aud: (c) => sign({ ...c, aud: 'some-other-client' }),
  iss: (c) => sign({ ...c, iss: 'http://127.0.0.1:1/' }),
  expired: (c) => sign({ ...c, iat: c.iat - 7200, exp: c.iat - 3600 }),
  'iat-future': (c) => sign({ ...c, iat: c.iat + 7200, exp: c.exp + 7200 }),
  azp: (c) => sign({ ...c, aud: [c.aud, 'some-other-client'], azp: 'some-other-client' }),
  'azp-only': (c) => sign({ ...c, azp: 'some-other-client' }),
  none: (c) => `${b64({ alg: 'none', typ: 'JWT' })}.${b64(c)}.`,
  'foreign-key': (c) => sign(c, foreign, 'foreign'),
  'foreign-key-same-kid': (c) => sign(c, foreign, 'main'),
  hs256: (c) => new SignJWT(c).setProtectedHeader({ alg: 'HS256', kid: 'main' })
    .sign(new TextEncoder().encode(opts.client_secret ?? 'passgate-test-secret')),
  'bad-signature': async (c) => {
    const t = await sign(c);
    const [h, p, s] = t.split('.');
    return `${h}.${p}.${s.slice(0, -4)}${s.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
  },
  // Claims changed after signing: the signature no longer covers them.
  'swapped-claims': async (c) => {
    const [h, , s] = (await sign(c)).split('.');
    return `${h}.${b64({ ...c, preferred_username: 'root' })}.${s}`;
  },
};

function b64(obj) {
  return Buffer.from(JSON.stringify(obj)).toString('base64url');
}

function sign(claims, key = rotatedIn ? rotated : main, kid = key.kid) {
  return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid }).sign(key.privateKey);
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/harness/tamper' && ctx.method === 'POST') {
    const mode = ctx.query.mode;
    if (!FORGE[mode]) { ctx.status = 400; ctx.body = `unknown mode ${mode}`; return; }
    tamper = mode;
    ctx.status = 204;
    return;
  }
  if (ctx.path === '/harness/redirect-uri' && ctx.method === 'POST') {
    extraRedirects.add(String(ctx.query.uri));
    ctx.status = 204;
    return;
  }
  if (ctx.path === '/harness/code-ttl' && ctx.method === 'POST') {
    const seconds = Number(ctx.query.seconds);
    if (!Number.isInteger(seconds) || seconds < 1) { ctx.status = 400; ctx.body = 'bad seconds'; return; }
    codeTtl = seconds;
    ctx.status = 204;
    return;
  }
  if (ctx.path === '/harness/rotate' && ctx.method === 'POST') {
    rotatedIn = true;
    ctx.status = 204;
    return;
  }
  await next();
  if (ctx.path === '/jwks' && rotatedIn && ctx.body && Array.isArray(ctx.body.keys)) {
    ctx.body = { keys: [...ctx.body.keys, rotated.pub] };
  }
  if (ctx.path === '/token' && ctx.body && typeof ctx.body.id_token === 'string') {
    const claims = decodeJwt(ctx.body.id_token);
    if (tamper) {
      const mode = tamper;
      tamper = null;
      ctx.body = { ...ctx.body, id_token: await FORGE[mode](claims) };
    } else if (rotatedIn) {
      ctx.body = { ...ctx.body, id_token: await sign(claims) };
    }
  }
});

server.on('request', provider.callback());
process.stdout.write(`listening ${issuer}\n`);
// The harness kills us; also leave when it goes away.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
