// A real OpenID Provider (node's oidc-provider) for portcullis end-to-end tests.
//
// Listens on 127.0.0.1 (random ports) and prints one line when ready:
//   READY <issuer> <control-url>
// The provider issues client-credentials access tokens:
//   resource urn:portcullis:demo   -> RS256 JWT, aud "portcullis-demo", roles ["admin"]
//   resource urn:portcullis:opaque -> opaque token (for RFC 7662 introspection)
// The control server changes the provider at run time:
//   POST /rotate    new signing key first in the JWKS, old keys kept for verification
//   POST /drop-old  keep only the newest key
//   POST /down      the provider answers nothing (connections are destroyed)
//   POST /up        the provider answers again
// Loopback only; secrets below are test fixtures.
import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

export const CLIENT_ID = 'portcullis-test';
export const CLIENT_SECRET = 'portcullis-test-secret-0123456789abcdef';

function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

let keys = [newSigningKey()];
let provider;
let down = false;

const server = createServer((req, res) => {
  if (down) {
    req.socket.destroy();
    return;
  }
  provider.callback()(req, res);
});

function build(issuer) {
  const p = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:portcullis:demo',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (resource === 'urn:portcullis:opaque') {
            return { scope: 'documents', audience: 'portcullis-opaque', accessTokenFormat: 'opaque' };
          }
          return {
            scope: 'documents',
            audience: 'portcullis-demo',
            accessTokenTTL: 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: () => ({ roles: ['admin'] }),
  });
  return p;
}

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  provider = build(issuer);

  const control = createServer((req, res) => {
    const ok = () => { res.writeHead(204); res.end(); };
    if (req.method !== 'POST') { res.writeHead(405); res.end(); return; }
    switch (req.url) {
      case '/rotate': keys = [newSigningKey(), ...keys]; provider = build(issuer); ok(); break;
      case '/drop-old': keys = [keys[0]]; provider = build(issuer); ok(); break;
      case '/down': down = true; ok(); break;
      case '/up': down = false; ok(); break;
      default: res.writeHead(404); res.end();
    }
  });
  control.listen(0, '127.0.0.1', () => {
    process.stdout.write(`READY ${issuer} http://127.0.0.1:${control.address().port}\n`);
  });
});

// Exit with the test process that spawned us.
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
