"""The datasets of the offline catalog: real tables shipped inside PyPI packages.

Each ``CatalogSpec`` names one table, how to load it from its package (no network), its licence as
the package documents it, the research areas it can serve and the columns worth predicting. Loaders
normalise column names to snake_case and turn date columns into calendar parts (year, month, ...),
so every exported table is plain numeric/categorical data; the rows themselves are unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stsc.hub.records import TargetSpec, TaskType

if TYPE_CHECKING:
    import pandas as pd

CLS = TaskType.CLASSIFICATION
REG = TaskType.REGRESSION


@dataclass(frozen=True)
class CatalogSpec:
    """One bundled table. ``group`` is the ``hub.catalog_sources`` name that enables it;
    ``distribution`` is the PyPI distribution whose version becomes the revision."""

    id: str
    group: str
    distribution: str
    title: str
    description: str
    license: str
    license_note: str
    areas: tuple[str, ...]
    keywords: tuple[str, ...]
    targets: tuple[TargetSpec, ...]
    load: Callable[[], pd.DataFrame] = field(repr=False, compare=False)


def snake(name: str) -> str:
    """``"Sepal Length (cm)"`` -> ``"sepal_length_cm"``."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


DAILY = ("year", "month", "day", "day_of_week")
HOURLY = ("year", "month", "day", "hour", "day_of_week")


def _tidy(df: pd.DataFrame, dates: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """snake_case columns; each date column ``col`` in ``dates`` becomes ``<col>_<part>`` integer
    columns (parts of ``pandas.Series.dt``: year, month, day, hour, day_of_week) where it was."""
    import pandas as pd

    dates = dates or {}
    out = {}
    for col in df.columns:
        if col in dates:
            ts = pd.to_datetime(df[col])
            for part in dates[col]:
                out[f"{snake(col)}_{part}"] = getattr(ts.dt, part).astype("int64")
        else:
            out[snake(col)] = df[col]
    return pd.DataFrame(out).reset_index(drop=True)


def _sklearn(loader: str, target: str, class_names: bool, **kwargs) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from sklearn import datasets

        bunch = getattr(datasets, loader)(as_frame=True, **kwargs)
        frame = _tidy(bunch.frame.drop(columns=["target"]))
        y = bunch.frame["target"]
        if class_names:
            names = [str(n) for n in bunch.target_names]
            y = y.map(lambda i: names[int(i)])
        frame[target] = y.to_numpy()
        return frame

    return load


def _vega(filename: str, dates: dict[str, tuple[str, ...]] | None = None) -> Callable[[], pd.DataFrame]:
    """A file of ``vega_datasets/_data`` read directly (the package's own reader parses dates with
    options pandas deprecates)."""

    def load() -> pd.DataFrame:
        import json
        from importlib.resources import files

        import pandas as pd

        path = files("vega_datasets").joinpath("_data", filename)
        with path.open("rb") as f:
            raw = pd.DataFrame(json.load(f)) if filename.endswith(".json") else pd.read_csv(f)
        return _tidy(raw, dates=dates).rename(columns={"year_year": "model_year"})

    return load


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return _tidy(load_penguins())


_UCI = "distributed with scikit-learn (BSD-3-Clause); original data from the UCI Machine Learning Repository"
_NOAA = "public-domain NOAA data, as packaged by vega_datasets (MIT)"


def _t(
    column: str, task_type: TaskType, note: str = "", n_classes: int | None = None, exclude: tuple = ()
) -> TargetSpec:
    return TargetSpec(
        column=column, task_type=task_type, note=note, n_classes=n_classes, exclude_features=list(exclude)
    )


_DISTRIBUTION = {"sklearn": "scikit-learn"}  # catalog group -> PyPI distribution, when they differ


def _spec(id: str, areas: str, keywords: str, **fields) -> CatalogSpec:
    """A spec whose group is the id's prefix; ``areas`` and ``keywords`` are space-separated."""
    group = id.split("/", 1)[0]
    return CatalogSpec(
        id=id,
        group=group,
        distribution=_DISTRIBUTION.get(group, group),
        areas=tuple(areas.split()),
        keywords=tuple(keywords.split()),
        **fields,
    )


SPECS: tuple[CatalogSpec, ...] = (
    _spec(
        id="sklearn/iris",
        title="Iris flowers",
        description="Sepal and petal measurements (cm) of 150 iris flowers from three species "
        "(Fisher, 1936).",
        license="bsd-3-clause",
        license_note=_UCI,
        areas="tabular science biology",
        keywords="iris flower species botany botanical petal sepal morphology measurement",
        targets=(_t("species", CLS, "three balanced species", 3),),
        load=_sklearn("load_iris", "species", class_names=True),
    ),
    _spec(
        id="sklearn/wine",
        title="Wine recognition",
        description="Chemical analysis (alcohol, phenols, colour intensity, ...) of 178 wines grown "
        "in one Italian region by three cultivators.",
        license="bsd-3-clause",
        license_note=_UCI,
        areas="tabular science chemistry",
        keywords="wine chemistry chemical cultivar food spectroscopy alcohol",
        targets=(_t("cultivar", CLS, "three cultivars", 3), _t("alcohol", REG, "alcohol content")),
        load=_sklearn("load_wine", "cultivar", class_names=True),
    ),
    _spec(
        id="sklearn/breast_cancer",
        title="Breast cancer Wisconsin (diagnostic)",
        description="Thirty features of cell nuclei computed from digitised fine-needle aspirate "
        "images of 569 breast masses, labelled malignant or benign.",
        license="bsd-3-clause",
        license_note=_UCI,
        areas="tabular medicine science vision",
        keywords="cancer tumour tumor diagnosis medical health clinical biopsy cell oncology",
        targets=(_t("diagnosis", CLS, "malignant vs benign", 2),),
        load=_sklearn("load_breast_cancer", "diagnosis", class_names=True),
    ),
    _spec(
        id="sklearn/digits",
        title="Optical recognition of handwritten digits",
        description="1,797 handwritten digits as 8x8 grey-level images (pixel_0_0 .. pixel_7_7, "
        "values 0-16).",
        license="bsd-3-clause",
        license_note=_UCI,
        areas="vision tabular",
        keywords="digit handwriting handwritten glyph pixel ocr character recognition",
        targets=(_t("digit", CLS, "ten classes 0-9", 10),),
        load=_sklearn("load_digits", "digit", class_names=False),
    ),
    _spec(
        id="sklearn/diabetes",
        title="Diabetes progression",
        description="Age, sex, body-mass index, blood pressure and six blood serum measurements of 442 "
        "diabetes patients, with a quantitative measure of disease progression one year later "
        "(Efron et al., 2004).",
        license="bsd-3-clause",
        license_note="distributed with scikit-learn (BSD-3-Clause); from Efron, Hastie, Johnstone and "
        "Tibshirani (2004), Least Angle Regression",
        areas="tabular medicine science",
        keywords="diabetes progression medical health clinical patient serum blood",
        targets=(_t("disease_progression", REG, "one-year progression score"),),
        load=_sklearn("load_diabetes", "disease_progression", class_names=False, scaled=False),
    ),
    _spec(
        id="vega_datasets/cars",
        title="Cars",
        description="Fuel efficiency, horsepower, weight, acceleration, cylinders, model year and "
        "origin of 406 car models from 1970-1982 (StatLib).",
        license="mit",
        license_note="StatLib data (Donoho and Ramos, 1982), packaged by vega_datasets (MIT)",
        areas="tabular engineering",
        keywords="car fuel efficiency mpg engine vehicle automotive horsepower manufacture specification",
        targets=(
            _t("miles_per_gallon", REG, "fuel efficiency; a few rows lack it"),
            _t("origin", CLS, "USA / Europe / Japan", 3, exclude=("name",)),
        ),
        load=_vega("cars.json", dates={"Year": ("year",)}),
    ),
    _spec(
        id="vega_datasets/seattle_weather",
        title="Seattle daily weather 2012-2015",
        description="Daily precipitation, maximum and minimum temperature, wind speed and weather "
        "type in Seattle, 2012-2015.",
        license="public-domain",
        license_note=_NOAA,
        areas="time_series tabular science climate",
        keywords="weather climate rain precipitation temperature meteorology forecast daily wind",
        targets=(
            _t("weather", CLS, "sun / rain / drizzle / fog / snow (imbalanced)", 5),
            _t("temp_max", REG, "daily maximum temperature (C)"),
        ),
        load=_vega("seattle-weather.csv", dates={"date": DAILY}),
    ),
    _spec(
        id="vega_datasets/seattle_temps",
        title="Seattle hourly temperatures 2010",
        description="Hourly temperature readings (F) in Seattle for the full year 2010.",
        license="public-domain",
        license_note=_NOAA,
        areas="time_series science climate",
        keywords="temperature hourly weather climate seasonal forecast seattle",
        targets=(_t("temp", REG, "hourly temperature from calendar features"),),
        load=_vega("seattle-temps.csv", dates={"date": HOURLY}),
    ),
    _spec(
        id="vega_datasets/sf_temps",
        title="San Francisco hourly temperatures 2010",
        description="Hourly temperature readings (F) in San Francisco for the full year 2010.",
        license="public-domain",
        license_note=_NOAA,
        areas="time_series science climate",
        keywords="temperature hourly weather climate seasonal forecast san francisco",
        targets=(_t("temp", REG, "hourly temperature from calendar features"),),
        load=_vega("sf-temps.csv", dates={"date": HOURLY}),
    ),
    _spec(
        id="vega_datasets/airports",
        title="US airports",
        description="Code, name, city, state, country and coordinates of 3,376 US airports "
        "(a subset of ourairports.com data).",
        license="public-domain",
        license_note="ourairports.com data, public domain; packaged by vega_datasets (MIT)",
        areas="tabular geospatial",
        keywords="airport geography geospatial location coordinates spatial map transport",
        targets=(_t("state", CLS, "US state from coordinates", exclude=("name", "city", "iata")),),
        load=_vega("airports.csv"),
    ),
    _spec(
        id="vega_datasets/barley",
        title="Minnesota barley yields",
        description="Barley yields (bushels/acre) of ten varieties at six Minnesota sites in 1931 and "
        "1932 (Immer et al., 1934).",
        license="mit",
        license_note="Immer, Hayes and Powers (1934), packaged by vega_datasets (MIT)",
        areas="tabular science agriculture",
        keywords="barley crop yield agriculture agricultural farming variety",
        targets=(_t("yield", REG, "yield from variety, site and year"),),
        load=_vega("barley.json"),
    ),
    _spec(
        id="vega_datasets/stocks",
        title="Monthly stock prices 2000-2010",
        description="Monthly closing prices of AAPL, AMZN, GOOG, IBM and MSFT, 2000-2010.",
        license="mit",
        license_note="packaged by vega_datasets (MIT); source not stated by the package",
        areas="time_series finance tabular",
        keywords="stock stocks price finance financial market equity trading",
        targets=(_t("price", REG, "closing price from symbol and date"),),
        load=_vega("stocks.csv", dates={"date": ("year", "month")}),
    ),
    _spec(
        id="palmerpenguins/penguins",
        title="Palmer Archipelago penguins",
        description="Bill length and depth, flipper length, body mass, sex, island and year of 344 "
        "Adelie, Chinstrap and Gentoo penguins observed at Palmer Station, Antarctica, 2007-2009.",
        license="cc0-1.0",
        license_note="data released under CC0 by Palmer Station LTER (Gorman et al., 2014); package code MIT",
        areas="tabular science biology ecology",
        keywords="penguin seabird species ecology animal wildlife biology morphology morphometric antarctica flipper bill body mass",
        targets=(
            _t("species", CLS, "three species", 3),
            _t("body_mass_g", REG, "body mass from measurements"),
            _t("sex", CLS, "male / female; some rows lack it", 2),
        ),
        load=_penguins,
    ),
)

SPEC_BY_ID: dict[str, CatalogSpec] = {s.id: s for s in SPECS}
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(s.group for s in SPECS))
