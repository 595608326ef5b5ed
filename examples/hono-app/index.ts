// A Hono app written for Cloudflare Workers, deployed to Grove unchanged: `grove deploy hono-app
// examples/hono-app/index.ts` bundles it (with hono) into one module.
import { Hono } from 'hono';
import { cors } from 'hono/cors';
import { HTTPException } from 'hono/http-exception';
import { etag } from 'hono/etag';
import { jwt, sign } from 'hono/jwt';
import { secureHeaders } from 'hono/secure-headers';
import { stream, streamText } from 'hono/streaming';

type Bindings = { JWT_SECRET: string; GREETING?: string };

const app = new Hono<{ Bindings: Bindings }>();

app.use('*', secureHeaders());
app.use('/api/*', cors({ origin: 'https://app.example.com', allowMethods: ['GET', 'POST'], maxAge: 600 }));
app.use('/etag/*', etag());

app.get('/', (c) => c.text(`${c.env.GREETING ?? 'Hello'} from Hono on Grove`));

app.get('/api/items/:id{[0-9]+}', (c) => c.json({ id: Number(c.req.param('id')), q: c.req.query('q') ?? null }));

app.post('/api/echo', async (c) => {
  const body = await c.req.json<Record<string, unknown>>();
  return c.json({ received: body, type: c.req.header('content-type') }, 201);
});

app.get('/etag/doc', (c) => c.text('a document that does not change'));

app.post('/login', async (c) => {
  const { user } = await c.req.json<{ user: string }>();
  const token = await sign({ sub: user, exp: Math.floor(Date.now() / 1000) + 60 }, c.env.JWT_SECRET);
  return c.json({ token });
});

app.use('/private/*', (c, next) => jwt({ secret: c.env.JWT_SECRET, alg: 'HS256' })(c, next));
app.get('/private/me', (c) => c.json({ sub: c.get('jwtPayload').sub }));

app.get('/stream', (c) =>
  streamText(c, async (s) => {
    for (let i = 1; i <= 3; i++) {
      await s.writeln(`line ${i}`);
      await s.sleep(10);
    }
  }),
);

app.get('/bytes', (c) =>
  stream(c, async (s) => {
    await s.write(new Uint8Array([104, 105]));
    await s.write('!');
  }),
);

app.notFound((c) => c.json({ error: 'not found', path: c.req.path }, 404));
app.onError((err, c) => (err instanceof HTTPException ? err.getResponse() : c.json({ error: err.message }, 500)));

export default app;
