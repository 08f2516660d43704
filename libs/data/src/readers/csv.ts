export type CsvRow = { line: number; fields: string[] } | { line: number; error: string };

/**
 * RFC 4180 records of a whole CSV text: fields separated by `delimiter`, records by CRLF or LF, a field in double
 * quotes may hold delimiters, line breaks and `""` (one quote). Each row carries the 1-based line where it starts.
 * Blank lines are passed over. A malformed record (unterminated quote, text after a closing quote, a quote inside
 * an unquoted field) becomes an error row, and parsing resumes at the line after the record's first line, so one
 * bad quote costs one record rather than the rest of the file.
 */
export function* parseCsv(text: string, delimiter = ','): Generator<CsvRow> {
  if (delimiter.length !== 1 || delimiter === '"' || delimiter === '\n' || delimiter === '\r') {
    throw new RangeError(`parseCsv: delimiter must be one character other than a quote or line break, got ${JSON.stringify(delimiter)}`);
  }
  const n = text.length;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let line = 1;
  while (i < n) {
    const startLine = line;
    const startIndex = i;
    if (text[i] === '\n' || text[i] === '\r') {
      // Blank line.
      if (text[i] === '\r' && text[i + 1] === '\n') i++;
      i++;
      line++;
      continue;
    }
    const fields: string[] = [];
    let error: string | undefined;
    for (;;) {
      let field = '';
      if (text[i] === '"') {
        i++;
        for (;;) {
          const q = text.indexOf('"', i);
          if (q < 0) {
            error = 'unterminated quoted field';
            break;
          }
          const chunk = text.slice(i, q);
          field += chunk;
          line += countNewlines(chunk);
          if (text[q + 1] === '"') {
            field += '"';
            i = q + 2;
            continue;
          }
          i = q + 1;
          break;
        }
        if (error) break;
        if (i < n && text[i] !== delimiter && text[i] !== '\n' && text[i] !== '\r') {
          error = `unexpected ${JSON.stringify(text[i])} after a closing quote (field ${fields.length + 1})`;
          break;
        }
      } else {
        let j = i;
        while (j < n && text[j] !== delimiter && text[j] !== '\n' && text[j] !== '\r') j++;
        field = text.slice(i, j);
        if (field.includes('"')) {
          error = `quote inside an unquoted field (field ${fields.length + 1})`;
          break;
        }
        i = j;
      }
      fields.push(field);
      if (i >= n) break;
      if (text[i] === delimiter) {
        i++;
        continue;
      }
      if (text[i] === '\r') i++;
      if (text[i] === '\n') i++;
      line++;
      break;
    }
    if (error !== undefined) {
      const nl = text.indexOf('\n', startIndex);
      i = nl < 0 ? n : nl + 1;
      line = startLine + 1;
      yield { line: startLine, error };
      continue;
    }
    yield { line: startLine, fields };
  }
}

function countNewlines(s: string): number {
  let c = 0;
  for (let k = s.indexOf('\n'); k >= 0; k = s.indexOf('\n', k + 1)) c++;
  return c;
}
