r"""A manifest.json of export_optimized as a markdown table (for bench/README.md).

    python -m vit_compress.export --model=Ti_16 --random_init \
        --input_shape=1,224,224,3 --output_path=/tmp/ti224_b1 --threads=2
    python bench/edge_table.py /tmp/ti224_b1/manifest.json [more manifests]

One row per artifact: img/s (median of the interleaved rounds, and the
range over rounds), speed over the fastest float artifact, size, the check.
"""
import json
import sys


def table(manifest) -> str:
  entries = manifest['artifacts']
  fastest = entries[manifest['fastest_float']]['seconds_per_batch']['median']
  batch = manifest['input_shape'][0]
  cpu = manifest['cpu']
  lines = [f"input {tuple(manifest['input_shape'])}, {manifest['threads']} threads, "
           f"{cpu['model']} ({cpu['cores']} cores; {' '.join(cpu['flags'])}); "
           f"{manifest['timing']}; checked on {manifest['check_images']}; "
           f"chosen: **{manifest['chosen']}**, "
           f"{manifest['chosen_speedup_over_fastest_float']:.2f}x the fastest float "
           f"({manifest['fastest_float']})", '',
           '| artifact | img/s (median) | range over rounds | vs fastest float | MiB | '
           'logit err. | top-1 agr. % | check |',
           '|---|---|---|---|---|---|---|---|']
  for name, e in entries.items():
    s = e['seconds_per_batch']
    lines.append(
        f"| {name} | {batch / s['median']:.1f} | {batch / s['max']:.1f}–"
        f"{batch / s['min']:.1f} | {fastest / s['median']:.2f}x | "
        f"{e['bytes'] / 2**20:.2f} | {e['check']['logit_error']:.4f} | "
        f"{e['check']['top1_agreement']:.1f} | "
        f"{'pass' if e['check']['passed'] else 'fail'} |")
  return '\n'.join(lines)


if __name__ == '__main__':
  for path in sys.argv[1:]:
    with open(path) as f:
      print(table(json.load(f)) + '\n')
