FROM python:3.11-slim

RUN useradd --system --uid 10001 --home-dir /var/lib/shoal shoal \
 && mkdir -p /var/lib/shoal && chown shoal /var/lib/shoal
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mirror ./mirror
COPY p2p ./p2p
COPY shoal ./shoal
COPY bench ./bench
RUN pip install --no-cache-dir . && rm -rf /src

USER shoal
ENV SHOAL_CACHE_DIR=/var/lib/shoal
VOLUME ["/var/lib/shoal"]
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=2).status != 200)"
ENTRYPOINT ["shoal"]
CMD ["serve"]
