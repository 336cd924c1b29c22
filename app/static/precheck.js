// What the page can tell about a picture before sending it: a file that is not an image (its
// first bytes, sniff.js) or one over a size limit the page knows (problems.js `limits`) is
// refused here, with the words the server would use, and never uploaded.
import { tooLargeHere } from "./problems.js";
import { ACCEPTED_TEXT, sniffFile } from "./sniff.js";

// -> null when the file may go to the server, else a card message { title, text }.
export async function precheck(item) {
  // The bytes do not change: read once per file, even when it is classified again.
  if (!item.sniffed) item.sniffed = sniffFile(item.file);
  const { format, what } = await item.sniffed;
  if (!format) {
    if (what === "an empty file") {
      return { title: "Empty file", text: `This file has no content. Accepted: ${ACCEPTED_TEXT}.` };
    }
    if (what === "unreadable") {
      return { title: "Can’t read the file", text: "This browser could not read it. Choose it again." };
    }
    return { title: "Not an image", text: `This file is ${what}. Accepted: ${ACCEPTED_TEXT}.` };
  }
  return tooLargeHere(item.file.size);
}
