// The hello-world worker both peers serve in the benchmark: no logging, a fixed body.
export default {
  fetch() {
    return new Response('Hello World\n');
  },
};
