// The function both peers run many times over in bench/isolate. run.ts puts a distinct number per
// function in place of the placeholder below, so no two functions share a module (source, bundle
// digest or compiled code).
const ID = __ID__;

export default {
  fetch() {
    return new Response(`Hello World ${ID}\n`);
  },
};
