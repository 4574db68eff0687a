// Key Vault holding every secret of the deployment, none of which is ever an app setting in clear or an output:
// - github-token: the token the github_dispatch stage dispatches the training workflow with (AL_GITHUB_TOKEN);
// - Label Studio's secrets, generated at deployment (main.bicep): its Django SECRET_KEY, the PostgreSQL
//   administrator password, the loop's service user's password and API token (the token is also the selector
//   and label apps' AL_LABEL_STUDIO_TOKEN);
// - labeling-storage-key, the labeling account's key (written by labeling-storage.bicep).
// Every reader is granted Key Vault Secrets User on the secrets it reads only (secret scope), never the vault:
// the selector and label apps the Label Studio token, the dispatch app the GitHub token (their Key Vault
// references resolve with each app's own identity), Label Studio's container app its four secrets. The
// collector reads nothing here. Only the deployer reads at vault scope (azd reads the generated secrets back).
//
// Purge protection is on: a deleted vault (and its secrets) stays recoverable for softDeleteRetentionInDays and
// nobody can purge it before (`azd down --purge` included; docs/deploy.md, Tear down).
// Network: public endpoint, default action Allow (infra/checkov-baseline.yaml): App Service and Container Apps
// resolve Key Vault references over the public endpoint when neither runs in a virtual network (Microsoft's
// Key Vault references page: a restricted vault must accept traffic from the app's virtual network; the apps'
// outbound addresses are not fixed), and azd and the postdeploy hook read secrets from the deployer's machine.

param name string
param location string
param tags object = {}

@description('Principal ids of the apps that read the Label Studio token (the selector and label apps): secret scope.')
param labelStudioTokenReaders array

@description('Principal id of the app that reads the GitHub token (the dispatch app): secret scope.')
param githubTokenReader string

@description('Log Analytics workspace the vault\'s audit log (AuditEvent) goes to.')
param logAnalyticsWorkspaceId string

@secure()
@description('GitHub token with actions:write on the training repository; empty: set the secret later.')
param githubToken string = ''

param secretName string = 'github-token'

@description('When the GitHub token expires (ISO 8601, e.g. 2026-12-31T00:00:00Z), the secret\'s expiry; empty: a year after this deployment.')
param githubTokenExpiresOn string = ''

@description('Now, for expiries relative to this deployment (a parameter because utcNow() is allowed only there).')
param now string = utcNow()

@secure()
@description('Label Studio\'s Django SECRET_KEY (signs sessions and tokens).')
param labelStudioSecretKey string
@secure()
@description('PostgreSQL administrator password (Label Studio\'s POSTGRE_PASSWORD).')
param postgresAdminPassword string
@secure()
@description('Password of the loop\'s service user in Label Studio (LABEL_STUDIO_PASSWORD).')
param labelStudioPassword string
@secure()
@description('API token of that user (LABEL_STUDIO_USER_TOKEN; the apps\' AL_LABEL_STUDIO_TOKEN).')
param labelStudioToken string

@description('Principal id of Label Studio\'s user-assigned identity: Key Vault Secrets User on its four secrets.')
param labelStudioPrincipalId string

@description('Principal id of whoever runs the deployment (azd: AZURE_PRINCIPAL_ID); empty: no grant. It may read secrets: azd reads the generated ones back on the next provision, the postdeploy hook reads the token and the labeling key.')
param deployerPrincipalId string = ''
@allowed(['User', 'ServicePrincipal'])
param deployerPrincipalType string = 'User'

// The names main.parameters.json reads back with azd's secretOrRandomPassword (keep them in step).
var labelStudioSecretNames = {
  secretKey: 'label-studio-secret-key'
  dbPassword: 'label-studio-db-password'
  password: 'label-studio-password'
  token: 'label-studio-token'
}
// One order for the secrets and their role assignments below.
var labelStudioSecretOrder = [
  labelStudioSecretNames.secretKey
  labelStudioSecretNames.dbPassword
  labelStudioSecretNames.password
  labelStudioSecretNames.token
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

// The audit log: every secret read (AuditEvent, with the caller's identity), and the vault's metrics.
resource vaultLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: vault
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}

// Created only when a token is given (an empty secret would only hide the missing token): the dispatch app's
// role is assigned on this secret, so the token reaches Key Vault through the deployment (AL_GITHUB_TOKEN), on
// every provision that has it. Its expiry is the token's own (githubTokenExpiresOn), else a year from now. Key
// Vault can refuse to serve an expired secret (403 SecretExpired): the dispatch app then refuses to start naming
// AL_GITHUB_TOKEN (an unresolved reference), instead of GitHub answering 401 at the next retraining.
var githubTokenExpiry = empty(githubTokenExpiresOn) ? dateTimeAdd(now, 'P1Y') : githubTokenExpiresOn

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(githubToken)) {
  parent: vault
  name: secretName
  properties: {
    value: githubToken
    contentType: 'GitHub token (actions:write)'
    attributes: { exp: dateTimeToEpoch(githubTokenExpiry) }
  }
}

// Written on every provision with the same values (azd reads them back, main.parameters.json), so a
// re-provision rotates nothing: Label Studio applies the user's password and token only when it creates the
// user, on its first start.
resource labelStudioSecrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for s in [
  { name: labelStudioSecretNames.secretKey, value: labelStudioSecretKey, type: 'Label Studio SECRET_KEY' }
  { name: labelStudioSecretNames.dbPassword, value: postgresAdminPassword, type: 'PostgreSQL administrator password' }
  { name: labelStudioSecretNames.password, value: labelStudioPassword, type: 'Label Studio service user password' }
  { name: labelStudioSecretNames.token, value: labelStudioToken, type: 'Label Studio service user API token' }
]: {
  parent: vault
  name: s.name
  properties: { value: s.value, contentType: s.type }
}]

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

// Secret scope: the selector and label apps read the Label Studio token (label-studio-token, index 3 of
// labelStudioSecretOrder) and nothing else here.
resource tokenReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for reader in labelStudioTokenReaders: {
  scope: labelStudioSecrets[3]
  name: guid(vault.id, labelStudioSecretNames.token, reader, keyVaultSecretsUser)
  properties: {
    principalId: reader
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}]

// Secret scope: the dispatch app reads the GitHub token only (once the deployment wrote it).
resource githubTokenReaderAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(githubToken)) {
  scope: secret
  name: guid(vault.id, secretName, githubTokenReader, keyVaultSecretsUser)
  properties: {
    principalId: githubTokenReader
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

// Secret scope: Label Studio's identity reads its own four secrets, not the GitHub token nor the storage key.
resource labelStudioReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (lsSecret, i) in labelStudioSecretOrder: {
  scope: labelStudioSecrets[i]
  name: guid(vault.id, lsSecret, labelStudioPrincipalId, keyVaultSecretsUser)
  properties: {
    principalId: labelStudioPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}]

// The person (or pipeline) deploying: read secrets (azd's secretOrRandomPassword on the next provision; the
// postdeploy hook's `az keyvault secret show`). Its principal type is the deployer's, not a service principal's.
resource deployerReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  scope: vault
  name: guid(vault.id, deployerPrincipalId, keyVaultSecretsUser)
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

output name string = vault.name
// Versionless: the references follow secret rotation.
output githubTokenSecretUri string = '${vault.properties.vaultUri}secrets/${secretName}'
output labelStudioTokenSecretUri string = '${vault.properties.vaultUri}secrets/${labelStudioSecretNames.token}'
output labelStudioTokenSecretName string = labelStudioSecretNames.token
// Versionless secret URIs (not secrets) for the container app's Key Vault references.
output labelStudioSecretUris object = {
  secretKey: '${vault.properties.vaultUri}secrets/${labelStudioSecretNames.secretKey}'
  dbPassword: '${vault.properties.vaultUri}secrets/${labelStudioSecretNames.dbPassword}'
  password: '${vault.properties.vaultUri}secrets/${labelStudioSecretNames.password}'
  token: '${vault.properties.vaultUri}secrets/${labelStudioSecretNames.token}'
}
