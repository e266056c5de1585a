// The script-tag entry: `<script src="capture.iife.js">` puts `EventCapture.createClient` on
// window; nothing else runs until the page calls it.

export { createClient, VERSION } from "./client.js";
