// Packs the data of `m3ae bench learning` part (b) for the GPU machine of the `device` tool, which cannot read
// ../shared/data: MedPix 2.0 (train and dev descriptions, images), VQA-RAD (questions, images), and the text the
// bench's vocabulary is trained on (ROCO captions, IU X-ray reports), in their own layouts, every image scaled down so that its shorter side is SIDE px (JPEG quality 85; the bench's recipe on a GPU
// reads them at 128 px). Output: .device/data (git-ignored; carry ".device" with the bundle: together under 64 MiB).
//   node scripts/device/pack-data.mjs [SHARED_DATA] [SIDE]
import { copyFile, mkdir, readdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const shared = resolve(process.argv[2] ?? process.env.M3AE_SHARED_DATA ?? join(root, '../shared/data'));
const side = Number(process.argv[3] ?? 128);
if (!Number.isInteger(side) || side < 32) throw new Error(`pack-data: SIDE = ${process.argv[3]}; expected an integer >= 32`);
const out = join(root, '.device', 'data');

async function images(from, to) {
  await mkdir(to, { recursive: true });
  const names = (await readdir(from)).filter((n) => /\.(jpe?g|png)$/i.test(n));
  let bytes = 0;
  for (let i = 0; i < names.length; i += 16) {
    await Promise.all(
      names.slice(i, i + 16).map(async (n) => {
        const info = await sharp(join(from, n)).resize(side, side, { fit: 'outside', withoutEnlargement: true }).jpeg({ quality: 85 }).toFile(join(to, n.replace(/\.png$/i, '.jpg')));
        bytes += info.size;
      }),
    );
  }
  return { count: names.length, bytes };
}

const roco = [];
for (const split of await readdir(join(shared, 'roco'), { withFileTypes: true })) {
  if (!split.isDirectory()) continue;
  for (const subset of await readdir(join(shared, 'roco', split.name), { withFileTypes: true })) {
    const file = `roco/${split.name}/${subset.name}/captions.txt`;
    if (subset.isDirectory() && (await stat(join(shared, file)).catch(() => undefined))) roco.push([file]);
  }
}
const copies = [['medpix2/descriptions_train.jsonl'], ['medpix2/descriptions_dev.jsonl'], ['vqa_rad/trainset.json'], ['iu_xray_reports/annotation.json'], ...roco];
for (const [file] of copies) {
  await mkdir(dirname(join(out, file)), { recursive: true });
  await copyFile(join(shared, file), join(out, file));
}
const medpix = await images(join(shared, 'medpix2/images_288'), join(out, 'medpix2/images_288'));
const vqa = await images(join(shared, 'vqa_rad/images'), join(out, 'vqa_rad/images'));
let json = 0;
for (const [file] of copies) json += (await stat(join(out, file))).size;
const mb = (b) => (b / 2 ** 20).toFixed(1);
console.log(`pack-data: ${out}: MedPix ${medpix.count} images (${mb(medpix.bytes)} MiB), VQA-RAD ${vqa.count} images (${mb(vqa.bytes)} MiB), text ${mb(json)} MiB, shorter side ${side} px`);
