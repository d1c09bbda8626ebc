// The widget (web/rtchat.js) carries a copy of src/index.js so that it embeds with one script
// tag and still shares its connection code with rtclient. web/build.mjs builds the whole
// widget, this copy included; this script is that build, kept under its old name.
//
//   node clients/js/scripts/inline.mjs          rebuild web/rtchat.js
//   node clients/js/scripts/inline.mjs --check  exit 1 when web/rtchat.js is stale
import { main } from '../../../web/build.mjs';

main();
