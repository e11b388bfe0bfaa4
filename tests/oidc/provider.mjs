// A real OpenID Connect provider (the npm package oidc-provider) for the gateway's tests.
//
//   node tests/oidc/provider.mjs '<json>'
//
// The JSON names the port and the gateway client(s): {"port": 0, "host": "localhost",
// "clients": [{"client_id", "client_secret", "redirect_uris", "post_logout_redirect_uris",
// "backchannel_logout_uri"}]}. It prints one line "listening <issuer>" once it serves.
// devInteractions gives a login form (any password) for the accounts below; consent is
// granted without asking (a first-party client). PKCE is required, back-channel logout and
// RP-initiated logout are enabled.
import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2] ?? '{}');
const host = config.host ?? 'localhost';

const ACCOUNTS = {
  'alice.sso': {
    email: 'alice@corp.example',
    email_verified: true,
    name: 'Alice from SSO',
    preferred_username: 'alice.sso',
    groups: ['admin', 'staff'],
  },
  'bob.sso': {
    email: 'bob@elsewhere.example',
    email_verified: true,
    name: 'Bob from SSO',
    preferred_username: 'bob.sso',
    groups: ['staff'],
  },
};

const server = await new Promise((resolve) => {
  // Listen first to learn the port, then mount the provider for that issuer.
  import('node:http').then(({ createServer }) => {
    const srv = createServer();
    srv.listen(config.port ?? 0, '127.0.0.1', () => resolve(srv));
  });
});
const issuer = `http://${host}:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: config.clients.map((client) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    backchannel_logout_session_required: true,
    ...client,
  })),
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // The ID token carries the claims of the scopes (the gateway reads nothing else).
  conformIdTokenClaims: false,
  cookies: { keys: ['gateway-tests-only-not-a-secret'] },
  // Back-channel logout goes to the gateway on loopback, which oidc-provider's SSRF guard
  // (its own dispatcher) refuses: the tests use plain fetch, and only ever name loopback.
  fetch: (url, options) => {
    const { dispatcher, ...plain } = options;
    return globalThis.fetch(url, plain);
  },
  async findAccount(ctx, id) {
    if (!ACCOUNTS[id]) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...ACCOUNTS[id] };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grantId =
      ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
});
provider.proxy = false;
provider.on('backchannel.success', (ctx, client) => {
  console.error(`backchannel logout delivered to ${client.clientId}`);
});
provider.on('backchannel.error', (ctx, err, client) => {
  console.error(`backchannel logout to ${client.clientId} failed: ${err.message} ${err.cause ?? ""}`);
});
provider.on('server_error', (ctx, err) => console.error(`server error: ${err.stack}`));
server.on('request', provider.callback());
console.log(`listening ${issuer}`);
