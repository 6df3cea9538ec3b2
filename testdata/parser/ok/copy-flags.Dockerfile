FROM busybox AS build
FROM busybox
COPY --from=build --chown=app:app --chmod=u+x,go=r --link --parents --exclude=*.md --exclude=tmp src/ docs/ /app/
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d --unpack=false https://example.com/a.tar.gz /a/
ADD --keep-git-dir https://github.com/moby/buildkit.git#v0.10.1 /bk
COPY ["with space", "/dst dir/"]
