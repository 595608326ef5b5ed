// A Cloudflare Workers-style module: the same file runs on Grove unchanged.
export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    console.log(`hello from ${url.pathname}`);
    return new Response(`Hello from Grove! You asked for ${url.pathname}\n`, {
      headers: { 'content-type': 'text/plain; charset=utf-8' },
    });
  },
};
