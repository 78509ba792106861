"""`distill dedup`: parses arguments and calls `distill.deduplication`."""

from __future__ import annotations

import click

from distill.cli._common import CONTEXT, NO_PROGRESS_OPTION, RUN_FOLDER, show_progress
from distill.errors import DistillCommand


@click.command("dedup", cls=DistillCommand, context_settings=CONTEXT)
@click.option("--labels", "labels_dir", required=True,
              type=RUN_FOLDER,
              help="Output folder of `distill label` (OUT). dedup.parquet and "
              "dedup_summary.json are written into it.")
@click.option("--against", type=click.Path(exists=True), default=None,
              metavar="FOLDER|FILE.npy",
              help="Leakage guard: benchmark images. A folder is described with the offline "
              "descriptor (and its files' sha1 compared); a .npy (or .parquet) holds benchmark "
              "vectors in the run's descriptor space, e.g. its CLIP embeddings. Every cluster "
              "with a member within the threshold of a benchmark image is dropped whole "
              "(dup_of = bench:<name>).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              metavar="TAU",
              help="Cosine similarity at which two images are near duplicates. Default: 0.65 "
              "for the offline descriptor (measured by benchmarks/dedup_accuracy.py), 0.95 for "
              "CLIP embeddings (common practice; not measurable here: calibrate on your data).")
@click.option("--descriptor", type=click.Choice(["auto", "clip", "offline"]), default="auto",
              show_default=True,
              help="clip: the CLIP embeddings the run stored (clip_aesthetic teacher). offline: "
              "a weight-free DCT descriptor computed from the image files at `path` (robust "
              "to re-encode, resize, mild crop, brightness and, by a mirrored query, to "
              "horizontal flips). auto: clip when the run stored embeddings, else offline.")
@click.option("--index", "index", type=click.Choice(["auto", "flat", "ivf", "hnsw"]),
              default="auto", show_default=True,
              help="FAISS index for the neighbour search. flat: exact (IndexFlatIP). ivf: "
              "IVF with fp16 storage. hnsw: HNSW graph (CPU only). auto: flat up to "
              "--flat-limit vectors, ivf above.")
@click.option("--flat-limit", type=click.IntRange(min=0), default=None,
              help="Largest collection auto searches exactly (default 10000: exact vs IVF "
              "break even at ~5k 512-d / ~20k 129-d vectors on 2 cores, see "
              "benchmarks/results/dedup_scale.json).")
@click.option("--nlist", type=click.IntRange(min=1), default=None,
              help="IVF lists (default: about 4*sqrt(N), a power of two).")
@click.option("--nprobe", type=click.IntRange(min=1), default=None,
              help="IVF lists searched per query (default 8): higher is slower and finds "
              "more. At 1M vectors, 8 gave recall@1 0.97 against exact search.")
@click.option("--hnsw-m", type=click.IntRange(min=4), default=None, help="HNSW links per node.")
@click.option("--ef-search", type=click.IntRange(min=1), default=None,
              help="HNSW search breadth: higher is slower and finds more.")
@click.option("--k", "k", type=click.IntRange(min=1), default=None,
              help="Neighbours asked per image; images whose k-th neighbour is still over the "
              "threshold are asked again with 4k (up to 1024).")
@click.option("--gpu", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True,
              help="Run flat/IVF indexes on a GPU when faiss is a GPU build (faiss-gpu).")
@click.option("--plan", type=click.Choice(["single", "sharded"]), default="single",
              show_default=True,
              help="single: one FAISS index in this process. sharded: k-means cells on a "
              "sample; each image joins the cells within --reach of its best and is searched "
              "exactly within them, in tasks (local processes or Ray) (README: Deduplicating "
              "past one machine).")
@click.option("--clusters", type=click.IntRange(min=1), default=None, metavar="N",
              help="sharded: k-means cells (default about 2*sqrt(N), a power of two).")
@click.option("--reach", type=click.FloatRange(0, 1), default=None, metavar="F",
              help="sharded: how far past its best cell an image looks, as a fraction of the "
              "margin that provably finds every pair (1: exact, and about as slow as searching "
              "everything) [default: 0.045; 0.03 found every pair of the 1 M benchmark].")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="sharded, local engine: processes running the tasks.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True,
              help="sharded: run the tasks here (--workers processes) or as Ray tasks (needs "
              "the [ray] extra).")
@click.option("--address", default=None, metavar="auto|ray://HOST:PORT",
              help="sharded, --engine ray: the cluster to join (default: $RAY_ADDRESS, else a "
              "Ray started on this machine).")
@NO_PROGRESS_OPTION
def dedup(labels_dir, no_progress, **options):
    """Find exact and near-duplicate images of a labeling run, and benchmark leakage.

    \b
      distill dedup --labels runs/photos
      distill dedup --labels runs/photos --against ~/bench/ava-test --descriptor offline
      distill dedup --labels runs/laion --against bench_clip.npy --index ivf --nprobe 16
      distill dedup --labels runs/laion --plan sharded --clusters 2048 --workers 2

    Exact duplicates share a sha1; near duplicates have cosine similarity >= TAU. Pairs join
    into clusters (connected components); each cluster keeps its highest-quality image.
    Writes OUT/dedup.parquet (image_id, cluster_id, is_duplicate, dup_of, similarity,
    reason = exact | near | bench), OUT/dedup_pairs.parquet (the pairs the clusters join) and
    OUT/dedup_summary.json; `distill train` skips the images marked is_duplicate.
    """
    from distill.deduplication import dedup as run

    click.echo(format_summary(run(labels_dir, **options, progress=show_progress(no_progress))))


def format_summary(summary: dict) -> str:
    index = summary["index"]
    index_text = index["kind"] + (" (GPU)" if index.get("gpu") else "")
    if index["kind"] == "ivf":
        index_text += f" nlist={index['nlist']} nprobe={index['nprobe']}"
    elif index["kind"] == "sharded":
        index_text = (f"flat within {index['clusters']} k-means cells (reach {index['reach']}: "
                      f"{index['cells_per_vector']} cells per image; {index['tasks']} search "
                      f"tasks, {index['engine']})")
    lines = [
        (f"{summary['images']} images: kept {summary['kept']}, dropped {summary['dropped']} "
         f"(exact {summary['exact_duplicates']}, near {summary['near_duplicates']}, "
         f"benchmark leakage {summary['dropped_by_leakage_guard']})"),
        (f"{summary['clusters']} duplicate clusters, largest {summary['largest_cluster']}; "
         f"descriptor {summary['descriptor_detail']}; threshold {summary['threshold']} "
         f"({summary['threshold_source']}); index {index_text}"),
    ]
    if summary["no_descriptor"]:
        lines.append(f"{summary['no_descriptor']} images had no descriptor (exact duplicates "
                     "only), e.g. " + "; ".join(f"{k}: {v}" for k, v in
                                                list(summary["no_descriptor_examples"].items())[:2]))
    if (index.get("pair_reach_max") or 0) > index.get("reach", 1):
        lines.append(f"a pair needed reach {index['pair_reach_max']} to share a home cell and "
                     f"met in another cell only (--reach {index['reach']}): pairs a little "
                     "further apart may be missed; raise --reach")
    if index.get("rows_over_max_k"):
        lines.append(f"{index['rows_over_max_k']} images have more than 1024 neighbours over the "
                     "threshold: their clusters may be incomplete (raise the threshold?)")
    guard = summary["leakage_guard"]
    if guard:
        lines.append(f"leakage guard: {guard['bench_images']} benchmark images, "
                     f"{guard['direct_matches']} direct matches, {guard['clusters_dropped']} "
                     "clusters dropped")
    lines.append(f"{summary['timings_s']['total_s']} s -> {summary['labels_dir']}/dedup.parquet")
    return "\n".join(lines)
